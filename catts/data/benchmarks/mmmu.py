"""MMMU validation (900 questions, 30 subjects): HF ``MMMU/MMMU`` parquet (one folder per subject,
``<Subject>/validation-00000-of-00001.parquet``; give one file or the folder above them all) and
VLMEvalKit's ``MMMU_DEV_VAL.tsv`` (dev + validation; the ``split`` column tells them apart).

- ``options`` is a Python-literal list string (``"['Project A', 'Project B']"``, ``"[]"`` if open);
  in the TSV, option columns ``A``, ``B``, ... with an empty ``A`` for an open question.
- Images: ``image_1`` .. ``image_7`` (HF; null when absent), or a list-literal ``image`` cell (TSV),
  in order; the question keeps its ``<image k>`` markers.
- multiple-choice: the gold is the letter. open: the gold is free text; a gold that is a list
  literal (``"['24/7', '3.429']"``, as 3 validation answers are in the publisher's answer key)
  gives alternatives (``metadata["answers"]``), any of which counts.
- Open answers match when they read as numbers (or closed-form LaTeX, by value) that are equal
  after rounding half-up to 2 decimal places (MMMU's own convention: 527.894 matches 527.89, 527.9
  does not); expressions with symbols through math-verify; text golds by normalised equality.
- ``split``: only rows of this split are kept (default ``validation``; the id prefix ``dev_`` /
  ``validation_`` / ``test_`` or the TSV's ``split`` column says which); a folder is searched for
  ``<split>-*.parquet`` files only.

Sub-split axes: ``question_type`` (multiple-choice / open), ``subject`` (from the id, e.g.
``Basic_Medical_Science``; the TSV's ``category`` when the id has none), ``subfield``,
``topic_difficulty``, ``split``.
"""

from __future__ import annotations

import re
from pathlib import Path

from catts.answers import answers_match
from catts.answers.latex import normalize_text
from catts.data.benchmarks.base import BenchmarkTask, text_field
from catts.data.benchmarks.readers import TsvImages, cell, hf_image, literal_list, option_columns
from catts.data.benchmarks.rules import check_options, choice_letter, number_of, open_type, same_at_precision
from catts.data.image import DataError
from catts.data.sample import Sample

QUESTION_TYPES = ("multiple-choice", "open")
_ID = re.compile(r"^(dev|validation|test)_(.+)_(\d+)$")
_IMAGE = re.compile(r"(?:dev|validation|test)_(.+?)_\d+_\d+\.\w+")
MAX_IMAGES = 7


class MMMU(BenchmarkTask):
    name = "mmmu"
    axes = ("question_type", "subject", "subfield", "topic_difficulty", "split")
    hf_required = ("id", "question", "options", "answer", "question_type", "image_1")
    tsv_required = ("index", "image", "question", "answer")
    id_keys = ("id", "index")

    def __init__(self, split: str | None = "validation"):
        self.split = split
        self.hf_split = split or "validation"

    def from_hf(self, row: dict, folder: Path) -> Sample | None:
        sid = text_field(row, "id").strip()
        if not self.keep_split(_id_parts(sid)[0]):
            return None
        images = [hf_image(row.get(f"image_{k}"), folder) for k in range(1, MAX_IMAGES + 1)]
        options = check_options(literal_list(text_field(row, "options"), "options"))
        return self._build(sid, row, [im for im in images if im is not None], options, row.get("question_type"))

    def from_tsv(self, row: dict, images: TsvImages) -> Sample | None:
        sid = (cell(row, "id") or text_field(row, "index")).strip()
        split = cell(row, "split") or _id_parts(sid)[0]
        if not self.keep_split(split):
            return None
        options = option_columns(row)
        qtype = cell(row, "question_type") or ("multiple-choice" if options else "open")
        named = _id_parts(sid)[1] or _image_subject(cell(row, "image_path"))
        fields = {**row, "split": split, "subject": named or cell(row, "category") or "", "hint": cell(row, "hint"),
                  "subfield": cell(row, "subfield") or cell(row, "l2-category") or ""}
        return self._build(sid, fields, images.images(row), options, qtype)

    def _build(self, sid: str, row: dict, images: list, options: list[str], qtype) -> Sample:
        if qtype not in QUESTION_TYPES:
            raise DataError(f"question_type {qtype!r} not in {QUESTION_TYPES}")
        if not images:
            raise DataError("no image")
        answer = text_field(row, "answer").strip()
        split, subject = _id_parts(sid)
        metadata = {"question_type": qtype, "subject": row.get("subject") or subject,
                    "subfield": row.get("subfield") or "", "topic_difficulty": row.get("topic_difficulty") or "",
                    "split": row.get("split") or split}
        for key in ("img_type", "explanation", "hint"):
            if row.get(key):
                metadata[key] = row[key]
        if qtype == "multiple-choice":
            if not options:
                raise DataError("a multiple-choice question without options")
            gold, answer_type = choice_letter(options, letter=answer), "choice"
        else:
            if options:
                raise DataError(f"an open question with options {options}")
            answers = [answer]
            if answer.startswith("[") and answer.endswith("]"):
                try:
                    answers = [str(a).strip() for a in literal_list(answer, "answer")] or [answer]
                except DataError:
                    pass
            if any(not a for a in answers):
                raise DataError(f"empty alternative in answer {answer!r}")
            metadata["answers"] = answers
            gold, answer_type = answers[0], open_type(answers[0])
        return Sample(id=sid, images=images, question=text_field(row, "question"), answer=gold,
                      answer_type=answer_type, options=options, question_type=qtype, metadata=metadata)

    def match_open(self, pred: str, sample: Sample) -> bool:
        for gold in sample.metadata.get("answers") or [sample.answer]:
            p, g = number_of(pred), number_of(gold)
            if p is not None and g is not None:  # numbers (and closed forms): at 2 decimal places only
                if same_at_precision(p, g, 2):
                    return True
            elif open_type(gold) == "number" and answers_match(pred, gold, "number"):  # symbolic: math-verify
                return True
            if normalize_text(pred) == normalize_text(gold):
                return True
        return False


def _image_subject(path: str | None) -> str | None:
    """The subject in an image file name such as ``validation_Accounting_3_1.png`` (first of a list)."""
    m = _IMAGE.search(path or "")
    return m.group(1) if m else None


def _id_parts(sid: str) -> tuple[str | None, str | None]:
    """``validation_Basic_Medical_Science_12`` -> ("validation", "Basic_Medical_Science")."""
    m = _ID.match(sid)
    return (m.group(1), m.group(2)) if m else (None, None)
