"""MMStar (1,500 four-option questions): HF ``Lin-Chen/MMStar`` parquet (config and split ``val``),
the authors' ``MMStar.tsv`` (``index, question, image, answer, category, l2_category, bench``) and
VLMEvalKit's ``MMStar.tsv`` (the generic multiple-choice columns: maybe ``A``..``D``, ``hint``,
``l2-category`` with a hyphen).

The options are either in columns ``A``..``D`` or inside the question, in one of the forms the real
data uses: ``"...\\nOptions: A: x, B: y, C: z, D: w"`` (most rows) or MathVista's query form
``"Hint: ...\\nQuestion: ...\\nChoices:\\n(A) x\\n(B) y"`` (the 345 rows from MathVista; the hint is
MathVista's answer instruction and is dropped from the prompt). Options are kept as written, so the
MMMU row turned multiple choice keeps its ``nan`` options. A question whose options cannot be read
keeps its whole text and gets the options ``A``..``D`` (the prompt then lists only the letters).
The gold is always a letter.

Sub-split axes: ``category`` (6), ``l2_category`` (18), ``source`` (the benchmark the row came from).
"""

from __future__ import annotations

from pathlib import Path

from catts.data.benchmarks.base import BenchmarkTask, text_field
from catts.data.benchmarks.readers import TsvImages, cell, hf_image, option_columns
from catts.data.benchmarks.rules import choice_letter, inline_options
from catts.data.image import DataError
from catts.data.sample import LETTERS, Sample

N_OPTIONS = 4


class MMStar(BenchmarkTask):
    name = "mmstar"
    hf_split = "val"
    axes = ("category", "l2_category", "source")
    hf_required = ("index", "question", "image", "answer", "category", "l2_category")
    tsv_required = ("index", "image", "question", "answer")
    id_keys = ("index",)

    def from_hf(self, row: dict, folder: Path) -> Sample:
        image = hf_image(row.get("image"), folder)
        if image is None:
            raise DataError("no image")
        meta = row.get("meta_info") or {}
        if not isinstance(meta, dict):
            raise DataError(f"'meta_info' must be a struct, not {type(meta).__name__}")
        return self._build(row, [image], [], source=meta.get("source") or "", extra={"meta_info": meta})

    def from_tsv(self, row: dict, images: TsvImages) -> Sample:
        options = option_columns(row)
        fields = {**row, "l2_category": cell(row, "l2_category") or cell(row, "l2-category") or ""}
        extra = {"hint": cell(row, "hint")} if cell(row, "hint") else {}
        return self._build(fields, images.images(row), options, source=cell(row, "bench") or "", extra=extra)

    def _build(self, row: dict, images: list, options: list[str], source: str, extra: dict) -> Sample:
        question = text_field(row, "question")
        metadata = {"category": str(row.get("category") or ""), "l2_category": str(row.get("l2_category") or ""),
                    "source": source, **extra}
        if not options:
            parsed = inline_options(question)
            if parsed is not None:
                stem, options, hint = parsed
                metadata.update(raw_question=question, **({"answer_hint": hint} if hint else {}))
                question = stem
            else:
                options = list(LETTERS[:N_OPTIONS])
        gold = choice_letter(options, letter=text_field(row, "answer"))
        return Sample(id=text_field(row, "index").strip(), images=images, question=question, answer=gold,
                      answer_type="choice", options=options, question_type=metadata["category"], metadata=metadata)
