"""MathVista testmini (1,000 questions): HF ``AI4Math/MathVista`` parquet, the repo's ``testmini.json``,
VLMEvalKit's ``MathVista_MINI.tsv``.

Fields: ``question_type`` multi_choice | free_form; ``answer_type`` integer | float | text | list;
``precision`` (decimal places of a float answer: an int in the JSON, a float in the parquet);
``unit``; ``choices`` (the gold ``answer`` of a multiple-choice question is the *text* of one
choice; the sample's gold is its letter, the text stays in ``metadata["answer_text"]``).

Answer rules (``match``):
- multi_choice: the option letter;
- integer: the number read from the answer must equal the gold integer (40.0 counts, 40.4 does
  not; MathVista's own scorer truncates with ``int(float(x))``, which would count 40.4);
- float: both rounded half-up to ``precision`` decimal places (when none is stated, the gold's own
  decimal places) must be equal: at precision 2, 0.131 and 0.13 match, 0.14 does not;
- list: the same length and each element equal (numbers at the stated precision, else exactly);
- text: normalised text equality.

Sub-split axes: ``question_type``; ``answer_type`` (integer, float(1), float(2), text, list);
``task``, ``context``, ``source``, ``grade`` from the row's metadata (the TSV has ``task`` only).
"""

from __future__ import annotations

import re
from pathlib import Path

from catts.answers.latex import normalize_text
from catts.data.benchmarks.base import BenchmarkTask, text_field
from catts.data.benchmarks.readers import TsvImages, cell, hf_row_image, literal_list, resolve_path
from catts.data.benchmarks.rules import (check_options, choice_letter, decimals, lists_match, number_of,
                                         parse_list, precision_value, same_at_precision, split_query)
from catts.data.image import DataError
from catts.data.sample import Sample

QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("integer", "float", "text", "list")
_PLACES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_HINT_PLACES = re.compile(r"with (\w+) decimal places?", re.I)
_META_AXES = ("task", "context", "source", "grade")


class MathVista(BenchmarkTask):
    name = "mathvista"
    hf_split = "testmini"
    axes = ("question_type", "answer_type", *_META_AXES)
    hf_required = ("pid", "question", "answer", "question_type", "answer_type")
    tsv_required = ("index", "image", "question", "answer", "question_type", "answer_type")
    repo_suffix = ".json"
    id_keys = ("pid", "_key", "index")

    def from_repo(self, row: dict, folder: Path) -> Sample:
        """An entry of the repo's ``testmini.json`` (images as paths: ``images/<pid>.jpg`` beside it)."""
        image = text_field(row, "image")
        return self._build(row, [resolve_path(image, folder)], query=None)

    def from_hf(self, row: dict, folder: Path) -> Sample:
        image = hf_row_image(row, folder)
        return self._build(row, [image], query=row.get("query"))

    def from_tsv(self, row: dict, images: TsvImages) -> Sample:
        """VLMEvalKit's row: ``question`` is (most likely) the full query with its hint and choices;
        ``choices`` a list literal, ``answer_option`` the letter; precision from a column or the hint."""
        query = text_field(row, "question")
        hint, question, _ = split_query(query)
        fields = {"pid": cell(row, "pid") or text_field(row, "index"), "question": question,
                  "answer": text_field(row, "answer"), "question_type": cell(row, "question_type"),
                  "answer_type": cell(row, "answer_type"), "unit": cell(row, "unit"),
                  "choices": literal_list(cell(row, "choices"), "choices") if cell(row, "choices") else None,
                  "metadata": {"task": cell(row, "task") or "", "skills": cell(row, "skills") or ""}}
        precision = cell(row, "precision")
        if precision is None:
            m = _HINT_PLACES.search(hint)
            precision = _PLACES.get(m.group(1).lower()) if m else None
        fields["precision"] = precision
        return self._build(fields, images.images(row), query=query if hint else None,
                           letter=cell(row, "answer_option"))

    def _build(self, row: dict, images: list, query: str | None, letter: str | None = None) -> Sample:
        pid = str(row.get("pid") or row.get("_key") or "").strip()
        if not pid:
            raise DataError("missing 'pid'")
        qtype, atype = row.get("question_type"), row.get("answer_type")
        if qtype not in QUESTION_TYPES:
            raise DataError(f"question_type {qtype!r} not in {QUESTION_TYPES}")
        if atype not in ANSWER_TYPES:
            raise DataError(f"answer_type {atype!r} not in {ANSWER_TYPES}")
        answer = text_field(row, "answer")
        unit = row.get("unit") or None
        precision = precision_value(row.get("precision"))
        meta = row.get("metadata") or {}
        if not isinstance(meta, dict):
            raise DataError(f"'metadata' must be an object, not {type(meta).__name__}")
        metadata = {**meta, "pid": pid, "question_type": qtype, "unit": unit, "precision": precision}
        if query:
            metadata["query"] = query
        options: list[str] = []
        if qtype == "multi_choice":
            options = check_options(row.get("choices") or [], "choices")
            if not options:
                raise DataError("a multi_choice question without choices")
            gold = choice_letter(options, letter=letter) if letter else choice_letter(options, text=answer)
            metadata["answer_text"] = answer
            sample_type, label = "choice", atype
        elif atype in ("integer", "float"):
            value = number_of(answer)
            if value is None or (atype == "integer" and not value.is_integer()):
                raise DataError(f"answer {answer!r} is not {'an integer' if atype == 'integer' else 'a number'}")
            if atype == "float" and precision is None:
                precision = metadata["precision"] = decimals(answer)
            gold, sample_type = answer.strip(), "number"
            label = f"float({precision})" if atype == "float" else atype
        elif atype == "list":
            if parse_list(answer) is None:
                raise DataError(f"answer {answer!r} is not a list")
            gold, sample_type, label = answer, "text", atype
        else:
            gold, sample_type, label = answer, "text", atype
        metadata["answer_type"] = label
        for axis in _META_AXES:
            metadata.setdefault(axis, "")
        return Sample(id=pid, images=images, question=text_field(row, "question"), answer=gold,
                      answer_type=sample_type, options=options, question_type=qtype, metadata=metadata)

    # ------------------------------------------------------------------ rules

    def question_text(self, sample: Sample) -> str:
        q = super().question_text(sample)
        unit = sample.metadata.get("unit")
        return f"{q} (Unit: {unit})" if unit and "(Unit:" not in q else q

    def answer_format(self, sample: Sample) -> list[str]:
        kind = sample.metadata.get("answer_type", "")
        if sample.answer_type == "choice":
            return []
        if kind == "integer":
            return ["Answer with an integer."]
        if kind.startswith("float"):
            p = sample.metadata.get("precision")
            return [f"Answer with a number with {p} decimal place{'s' if p != 1 else ''}."]
        if kind == "list":
            return ["Answer with a Python list, e.g. [1, 2, 3]."]
        return []

    def match_open(self, pred: str, sample: Sample) -> bool:
        kind, places = sample.metadata.get("answer_type", ""), sample.metadata.get("precision")
        if kind == "list":
            return lists_match(pred, sample.answer, places)
        if sample.answer_type == "number":
            p, g = number_of(pred), number_of(sample.answer)
            if p is None or g is None:
                return False
            if kind == "integer":
                return p == g
            return same_at_precision(p, g, places if places is not None else decimals(sample.answer))
        return normalize_text(pred) == normalize_text(sample.answer)
