"""MathVision (MATH-V) testmini (304 questions): HF ``MathLLMs/MathVision`` parquet, the repo's
``data/testmini.jsonl`` (images at ``images/<id>.jpg`` beside ``data/``), VLMEvalKit's
``MathVision_MINI.tsv`` / ``MathVision.tsv`` (``choices`` a list literal, ``category`` = subject).

- ``options`` empty: free-form. The gold is "number" when it reads as a number or a LaTeX
  expression (``-2``, ``4.8``, ``\\frac{3}{2}``, ``2\\sqrt{3}``): matched by catts's number rules
  (tolerance 1e-4 relative, math-verify for expressions, so ``\\sqrt{12}`` matches ``2\\sqrt{3}``);
  any other gold is text (normalised equality, or math-verify equality when both sides parse).
- options given (five, often LaTeX, sometimes just ``A``..``E`` when the choices are drawn in the
  image): the gold is the letter.
- Every row has one image (a composite), even when its question names ``<image2>``.

Sub-split axes: ``format`` (multiple_choice / free_form), ``subject`` (16), ``level`` (1-5).
"""

from __future__ import annotations

from pathlib import Path

from catts.answers.latex import normalize_text, strip_latex
from catts.answers.symbolic import symbolic_equal, to_sympy
from catts.data.benchmarks.base import BenchmarkTask, text_field
from catts.data.benchmarks.readers import TsvImages, cell, hf_row_image, literal_list, resolve_path
from catts.data.benchmarks.rules import check_options, choice_letter, open_type
from catts.data.image import DataError
from catts.data.sample import Sample


class MathVision(BenchmarkTask):
    name = "mathvision"
    hf_split = "testmini"
    axes = ("format", "subject", "level")
    hf_required = ("id", "question", "options", "answer")
    tsv_required = ("index", "image", "question", "answer")
    repo_suffix = ".jsonl"
    id_keys = ("id", "index")

    def from_repo(self, row: dict, folder: Path) -> Sample:
        return self._build(row, [resolve_path(text_field(row, "image"), folder)])

    def from_hf(self, row: dict, folder: Path) -> Sample:
        image = hf_row_image(row, folder)
        return self._build(row, [image])

    def from_tsv(self, row: dict, images: TsvImages) -> Sample:
        fields = {"id": cell(row, "id") or text_field(row, "index"), "question": text_field(row, "question"),
                  "answer": text_field(row, "answer"), "options": literal_list(cell(row, "choices"), "choices"),
                  "subject": cell(row, "category") or cell(row, "subject") or "", "level": cell(row, "level"),
                  "solution": cell(row, "solution")}
        return self._build(fields, images.images(row))

    def _build(self, row: dict, images: list) -> Sample:
        sid = text_field(row, "id").strip()
        answer = text_field(row, "answer").strip()
        options = check_options(literal_list(row.get("options"), "options"))
        if options:
            try:
                gold = choice_letter(options, letter=answer)
            except DataError:
                gold = choice_letter(options, text=answer)  # a gold given as an option's text
            answer_type, fmt = "choice", "multiple_choice"
        else:
            gold, answer_type, fmt = answer, open_type(answer), "free_form"
        level = row.get("level")
        metadata = {"format": fmt, "subject": str(row.get("subject") or ""),
                    "level": "" if level is None else str(level).removesuffix(".0")}
        if row.get("solution"):
            metadata["solution"] = row["solution"]
        return Sample(id=sid, images=images, question=text_field(row, "question"), answer=gold,
                      answer_type=answer_type, options=options, question_type=fmt, metadata=metadata)

    def match_open(self, pred: str, sample: Sample) -> bool:
        if sample.answer_type == "number":
            return super().match_open(pred, sample)
        if normalize_text(pred) == normalize_text(sample.answer):
            return True
        return symbolic_equal(to_sympy(strip_latex(sample.answer)), to_sympy(strip_latex(pred)))
