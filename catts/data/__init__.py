"""Datasets: the embedded ``easyvqa`` and ``shapes``, and user JSONL / TSV files, as ``Sample`` records."""

from __future__ import annotations

from pathlib import Path

from catts.data.sample import DataError, Sample, iter_jsonl, iter_tsv, write_jsonl, write_tsv

EMBEDDED = ("easyvqa", "shapes")

__all__ = ["DataError", "Sample", "EMBEDDED", "load_data", "load_embedded", "write_jsonl", "write_tsv"]


def load_embedded(name: str, split: str) -> list[Sample]:
    if name == "easyvqa":
        from catts.data.easyvqa import load_easyvqa
        return list(load_easyvqa(split))
    if name == "shapes":
        from catts.data.shapes import load_shapes
        return list(load_shapes(split))
    raise DataError(f"no embedded dataset {name!r}; embedded: {', '.join(EMBEDDED)}")


def load_data(spec: str, errors: list[str] | None = None) -> list[Sample]:
    """``NAME:SPLIT`` for embedded data (``easyvqa:test``), or the path of a ``.jsonl`` / ``.tsv`` file.

    Malformed rows of a file are appended to ``errors`` (when given) and skipped; otherwise they raise.
    """
    path = Path(spec)
    if path.suffix in (".jsonl", ".tsv") or path.exists():
        if not path.exists():
            raise DataError(f"data file {spec} does not exist")
        reader = iter_tsv if path.suffix == ".tsv" else iter_jsonl
        return list(reader(path, errors))
    name, _, split = spec.partition(":")
    if not split:
        raise DataError(f"--data {spec!r}: give NAME:SPLIT (e.g. easyvqa:test) or a .jsonl/.tsv path")
    return load_embedded(name, split)
