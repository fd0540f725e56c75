"""Datasets: the embedded ``easyvqa`` and ``shapes``, and user JSONL / TSV files, as ``Sample`` records."""

from __future__ import annotations

from pathlib import Path

from catts.data.image import DataError, fit_image, open_image, to_rgb
from catts.data.sample import Sample, iter_jsonl, iter_tsv, write_jsonl, write_tsv

EMBEDDED = ("easyvqa", "shapes")

__all__ = ["DataError", "Sample", "EMBEDDED", "fit_image", "load_data", "load_embedded", "open_image", "to_rgb",
           "write_jsonl", "write_tsv"]


def load_embedded(name: str, split: str) -> list[Sample]:
    if name == "easyvqa":
        from catts.data.easyvqa import load_easyvqa
        return list(load_easyvqa(split))
    if name == "shapes":
        from catts.data.shapes import load_shapes
        return list(load_shapes(split))
    raise DataError(f"no embedded dataset {name!r}; embedded: {', '.join(EMBEDDED)}")


def load_data(spec: str, errors: list[dict] | None = None) -> list[Sample]:
    """``NAME:SPLIT`` for embedded data (``easyvqa:test``), ``BENCHMARK:PATH`` for a benchmark's own files
    (``mathvista``, ``mathvision``, ``mmmu``, ``mmstar``: see ``catts.data.benchmarks``), or the path of a
    ``.jsonl`` / ``.tsv`` file (any other existing file is read as JSONL).

    Rules for a file:
    - it must exist and be a readable file, else DataError ("data file X does not exist", ...);
    - a TSV must have the columns image, question and answer, else one DataError for the file;
    - an empty file (or a TSV with only its header) gives ``[]``: the caller decides what that means;
    - each malformed row (see ``catts.data.sample``) is skipped and appended to ``errors`` as
      ``{"source": str (the file), "line": int (1-based, where the row starts), "id": str | None,
      "error": str (the full message, file and line included)}``; without ``errors`` the first
      malformed row raises DataError with that message. Every row of the file thus ends up either
      as a sample or as an entry; images are decoded later, by ``Sample.load_images``.
    """
    from catts.data.benchmarks import BENCHMARKS, load_benchmark  # NAME:PATH, e.g. mathvista:MathVista_MINI.tsv

    bench, sep, bench_path = spec.partition(":")
    if sep and bench_path and bench.lower() in BENCHMARKS:
        return load_benchmark(bench, bench_path, errors)
    path = Path(spec)
    if path.suffix in (".jsonl", ".tsv") or path.exists():
        return _load_file(path, errors)
    name, _, split = spec.partition(":")
    if not split:
        raise DataError(f"--data {spec!r}: give NAME:SPLIT (e.g. easyvqa:test) or a .jsonl/.tsv path")
    return load_embedded(name, split)


def _load_file(path: Path, errors: list[dict] | None) -> list[Sample]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data file {path} is not a file")
    reader = iter_tsv if path.suffix == ".tsv" else iter_jsonl
    try:
        return list(reader(path, errors))
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e}") from e
