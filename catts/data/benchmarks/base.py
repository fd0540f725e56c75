"""``BenchmarkTask``: one benchmark's loaders, prompt, answer extraction, matching and sub-splits.

A task reads the layouts users download (``load``): a Hugging Face parquet file or a folder of
them, a VLMEvalKit TSV, and where the benchmark has one, its repo's JSON / JSONL. Every row ends up
either as a ``Sample`` or as an error entry ``{"source", "line", "id", "error"}`` (as in
``catts.data.sample``; without an ``errors`` list the first malformed row raises DataError). Rows of
another split than the task's ``split`` (MMMU's dev rows) are skipped, not errors.

The samples are ordinary catts samples (``answer_type`` choice/number/text, a multiple-choice gold
is its option letter), so the generic prompt and ``answers_match`` work on them; the task adds the
benchmark's own rules: ``prompt`` (its answer format, e.g. MathVista's decimal places), ``extract``,
``match`` (e.g. floats at the stated precision) and ``subsplits`` (its per-category breakdown). A
sample records its task in ``metadata["benchmark"]`` and each sub-split value under the axis name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from catts.answers import Extraction, answers_match, extract_answer
from catts.data.image import DataError
from catts.data.sample import LETTERS, Sample, _printable, _report
from catts.data.benchmarks.readers import (RawRow, TsvImages, json_entries, jsonl_rows, parquet_files, parquet_rows,
                                           tsv_rows)
from catts.prompts import CHOICE_INSTRUCTION, OPEN_INSTRUCTION

LAYOUTS = ("hf", "tsv", "repo")


class BenchmarkTask:
    name = ""
    hf_split = ""               # the HF split whose parquet files a folder is searched for
    split: str | None = None    # rows of another split are skipped (None: keep all)
    axes: tuple[str, ...] = ()  # sub-split axes, the first is the default (also Sample.question_type)
    hf_required: tuple[str, ...] = ()
    tsv_required: tuple[str, ...] = ("index", "image", "question", "answer")
    repo_suffix = ""            # ".json" / ".jsonl" when the benchmark's repo ships its own file
    id_keys: tuple[str, ...] = ("id", "index")

    # ------------------------------------------------------------------ loading

    def layout(self, path: Path) -> str:
        if path.is_dir() or path.suffix == ".parquet":
            return "hf"
        if path.suffix == ".tsv":
            return "tsv"
        if self.repo_suffix and path.suffix == self.repo_suffix:
            return "repo"
        known = ", ".join(x for x in (".parquet (or a folder of them)", ".tsv", self.repo_suffix) if x)
        raise DataError(f"{path}: not a {self.name} file ({known})")

    def load(self, path: str | Path, errors: list[dict] | None = None) -> list[Sample]:
        path = Path(path)
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        layout = self.layout(path)
        try:
            return list(self._unique(self._samples(path, layout, errors), errors))
        except OSError as e:
            raise DataError(f"cannot read data file {path}: {e}") from e

    def _rows(self, path: Path, layout: str) -> Iterator[tuple[RawRow, object]]:
        if layout == "hf":
            for f in parquet_files(path, self.hf_split):
                for raw in parquet_rows(f, self.hf_required):
                    yield raw, f.parent
        elif layout == "tsv":
            rows = list(tsv_rows(path, self.tsv_required))
            images = TsvImages(rows, path.parent)
            for raw in rows:
                yield raw, images
        else:
            for raw in (json_entries(path) if self.repo_suffix == ".json" else jsonl_rows(path)):
                yield raw, path.parent

    def _samples(self, path: Path, layout: str, errors) -> Iterator[tuple[RawRow, Sample]]:
        convert = {"hf": self.from_hf, "tsv": self.from_tsv, "repo": self.from_repo}[layout]
        for raw, ctx in self._rows(path, layout):
            row_id = self.row_id(raw.data)
            if raw.error is not None:
                _report(errors, raw.source, raw.line, row_id, f"malformed row: {raw.error}")
                continue
            try:
                sample = convert(raw.data, ctx)
            except (ValueError, TypeError, KeyError, AttributeError, SyntaxError) as e:  # DataError: a ValueError
                problem = f"missing {e}" if isinstance(e, KeyError) else str(e)
                _report(errors, raw.source, raw.line, row_id, f"malformed {self.name} row ({problem})", e)
                continue
            if sample is not None:
                sample.metadata.update(benchmark=self.name, layout=layout)
                yield raw, sample

    def _unique(self, rows, errors) -> Iterator[Sample]:
        first: dict[str, tuple[Path, int]] = {}
        for raw, sample in rows:
            if sample.id in first:
                src, line = first[sample.id]
                where = f"line {line}" if src == raw.source else f"{src}:{line}"
                _report(errors, raw.source, raw.line, sample.id, f"duplicate id (first on {where})")
                continue
            first[sample.id] = (raw.source, raw.line)
            yield sample

    def row_id(self, row: dict | None) -> str | None:
        for key in self.id_keys:
            v = (row or {}).get(key)
            if v is not None and str(v).strip():
                return _printable(str(v).strip())
        return None

    def keep_split(self, row_split: str | None) -> bool:
        return self.split is None or not row_split or row_split == self.split

    def from_hf(self, row: dict, folder: Path) -> Sample | None:
        raise NotImplementedError

    def from_tsv(self, row: dict, images: TsvImages) -> Sample | None:
        raise NotImplementedError

    def from_repo(self, row: dict, folder: Path) -> Sample | None:
        raise NotImplementedError

    # ------------------------------------------------------------------ prompt, extraction, matching

    def prompt(self, sample: Sample) -> str:
        """Hint (if the data has one), question, lettered options, answer format, then catts's
        instruction to reason and box the answer (a letter for multiple choice)."""
        lines = []
        if sample.metadata.get("hint"):
            lines.append(f"Hint: {sample.metadata['hint'].strip()}")
        lines.append(self.question_text(sample))
        if sample.options:
            lines += option_lines(sample.options)
        lines += self.answer_format(sample)
        lines.append(CHOICE_INSTRUCTION if sample.answer_type == "choice" else OPEN_INSTRUCTION)
        return "\n".join(lines)

    def question_text(self, sample: Sample) -> str:
        return sample.question.replace("\r\n", "\n").strip()

    def answer_format(self, sample: Sample) -> list[str]:
        return []

    def extract(self, text: str, sample: Sample) -> Extraction:
        return extract_answer(text, sample.answer_type, sample.options)

    def match(self, pred: str | Extraction | None, sample: Sample) -> bool:
        """Whether an extracted answer is right: option letters for multiple choice, else ``match_open``."""
        if isinstance(pred, Extraction):
            pred = pred.answer
        if pred is None or not str(pred).strip():
            return False
        if sample.answer_type == "choice":
            return answers_match(pred, sample.answer, "choice")
        return self.match_open(str(pred), sample)

    def match_open(self, pred: str, sample: Sample) -> bool:
        return answers_match(pred, sample.answer, sample.answer_type)

    def score(self, text: str, sample: Sample) -> tuple[Extraction, bool]:
        ext = self.extract(text, sample)
        return ext, self.match(ext, sample)

    # ------------------------------------------------------------------ sub-splits

    def subsplits(self, sample: Sample) -> dict[str, str]:
        return {axis: str(sample.metadata.get(axis, "")) for axis in self.axes}

    def subsplit(self, sample: Sample, axis: str | None = None) -> str:
        axis = axis or self.axes[0]
        if axis not in self.axes:
            raise ValueError(f"{self.name} has no sub-split axis {axis!r}; it has {', '.join(self.axes)}")
        return self.subsplits(sample)[axis]


def option_lines(options: list[str]) -> list[str]:
    """``A. text`` lines; options that are just their own letters (drawn in the image) as one line."""
    if list(options) == list(LETTERS[: len(options)]):
        return [f"Options: {', '.join(options)}"]
    return [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]


def text_field(row: dict, key: str, *, required: bool = True) -> str | None:
    """A text cell (a number is written as text); a missing or empty required one is a DataError."""
    v = row.get(key)
    if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip() and required):
        if required:
            raise DataError(f"missing {key!r}")
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise DataError(f"{key!r} must be text, not {type(v).__name__}")
    return str(v)
