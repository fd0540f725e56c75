"""One sample record for every dataset, and its JSONL / VLMEvalKit-TSV forms.

JSONL schema (one object per line; unknown keys are kept in ``metadata``):

    {"id": "shapes-test-00012",            # unique string
     "images": ["images/shapes-test-00012.png"],   # paths relative to the JSONL file
     "question": "What color is the square?",
     "options": ["red", "green", "blue", "yellow"],   # option texts, letters A, B, ... implied; [] if open
     "answer": "C",                         # a letter for "choice", else the gold answer text/number
     "answer_type": "choice",               # "choice" | "number" | "text"
     "question_type": "color",              # free label used for per-type accuracy
     "metadata": {...}}

The TSV form is VLMEvalKit's: columns ``index``, ``image`` (base64 PNG/JPEG), ``question``, option
columns ``A``, ``B``, ..., ``answer``, plus ``answer_type``, ``question_type``, ``id`` and a JSON
``metadata`` column of our own (VLMEvalKit ignores unknown columns).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

ANSWER_TYPES = ("choice", "number", "text")
LETTERS = string.ascii_uppercase


class DataError(ValueError):
    """A malformed sample; the message names it."""


@dataclass
class Sample:
    id: str
    images: list  # each a path (str/Path) or an in-memory PIL image
    question: str
    answer: str
    answer_type: str = "text"
    options: list[str] = field(default_factory=list)
    question_type: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise DataError(f"sample {self.id!r}: answer_type {self.answer_type!r} not in {ANSWER_TYPES}")
        if self.answer_type == "choice":
            if not self.options:
                raise DataError(f"sample {self.id!r}: a choice question needs options")
            if self.answer not in tuple(LETTERS[: len(self.options)]):  # a tuple: "" and "AB" are no letter
                raise DataError(f"sample {self.id!r}: answer {self.answer!r} is not one of the option letters")

    def load_images(self) -> list[Image.Image]:
        """Open every image (paths are read now); raises DataError naming the sample on failure."""
        out = []
        for im in self.images:
            if isinstance(im, Image.Image):
                out.append(im)
                continue
            try:
                with Image.open(im) as f:
                    f.load()
                    out.append(f.copy())
            except (OSError, Image.DecompressionBombError, ValueError) as e:
                raise DataError(f"sample {self.id!r}: cannot read image {im}: {e}") from e
        return out

    @property
    def option_letters(self) -> str:
        return LETTERS[: len(self.options)]


def _image_bytes(im, fmt: str = "PNG") -> bytes:
    if not isinstance(im, Image.Image):
        return Path(im).read_bytes()
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_jsonl(samples: Iterable[Sample], path: str | Path, image_dir: str = "images") -> Path:
    """Write samples to ``path``; in-memory images are saved as PNG under ``image_dir`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / image_dir).mkdir(exist_ok=True)
    used: set[str] = set()
    with path.open("w") as f:
        for s in samples:
            rels = []
            for k, im in enumerate(s.images):
                suffix = f"_{k}" if len(s.images) > 1 else ""
                ext = ".png" if isinstance(im, Image.Image) else Path(im).suffix
                rel = f"{image_dir}/{_safe_name(s.id)}{suffix}{ext}"
                n = 1
                while rel in used:  # ids such as "a/b" and "a_b" share a safe name: keep both images
                    rel = f"{image_dir}/{_safe_name(s.id)}{suffix}-{n}{ext}"
                    n += 1
                used.add(rel)
                (path.parent / rel).write_bytes(_image_bytes(im))
                rels.append(rel)
            row = {"id": s.id, "images": rels, "question": s.question, "options": s.options,
                   "answer": s.answer, "answer_type": s.answer_type,
                   "question_type": s.question_type, "metadata": s.metadata}
            f.write(json.dumps(row) + "\n")
    return path


def _safe_name(sample_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample_id)


def _from_row(row: dict, base: Path, where: str) -> Sample:
    known = {"id", "images", "image", "question", "options", "answer", "answer_type",
             "question_type", "metadata"}
    try:
        images = row.get("images", row.get("image"))
        if isinstance(images, str):
            images = [images]
        if not images:
            raise DataError("no images")
        meta = dict(row.get("metadata") or {})
        meta.update({k: v for k, v in row.items() if k not in known})
        return Sample(id=str(row["id"]), images=[str(base / p) for p in images],
                      question=str(row["question"]), answer=str(row["answer"]),
                      answer_type=row.get("answer_type", "text"), options=list(row.get("options") or []),
                      question_type=row.get("question_type", ""), metadata=meta)
    except (KeyError, TypeError, DataError) as e:
        raise DataError(f"{where}: malformed sample ({type(e).__name__}: {e})") from e


def iter_jsonl(path: str | Path, errors: list[str] | None = None) -> Iterator[Sample]:
    """Yield samples; a malformed row is reported into ``errors`` (if given) and skipped, else raised."""
    path = Path(path)
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError("row is not a JSON object")
                yield _from_row(row, path.parent, f"{path}:{n} id={row.get('id')!r}")
            except (json.JSONDecodeError, DataError) as e:
                if errors is None:
                    raise DataError(f"{path}:{n}: {e}") from e
                errors.append(f"{path}:{n}: {e}")


def write_tsv(samples: Iterable[Sample], path: str | Path) -> Path:
    """VLMEvalKit TSV: base64 image, option columns A.. (as many as the widest sample)."""
    samples = list(samples)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_opt = max((len(s.options) for s in samples), default=0)
    cols = ["index", "id", "image", "question", *LETTERS[:n_opt], "answer", "answer_type",
            "question_type", "metadata"]
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(cols)
        for i, s in enumerate(samples):
            if len(s.images) != 1:
                raise DataError(f"sample {s.id!r}: the TSV form holds exactly one image, got {len(s.images)}")
            img = base64.b64encode(_image_bytes(s.images[0])).decode()
            opts = [s.options[k] if k < len(s.options) else "" for k in range(n_opt)]
            w.writerow([i, s.id, img, s.question, *opts, s.answer, s.answer_type, s.question_type,
                        json.dumps(s.metadata)])
    return path


def iter_tsv(path: str | Path, errors: list[str] | None = None) -> Iterator[Sample]:
    """Read a VLMEvalKit-style TSV (ours or theirs: missing columns get defaults)."""
    csv.field_size_limit(sys.maxsize)
    path = Path(path)
    with path.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f, delimiter="\t"), 2):
            where = f"{path}:{n} index={row.get('index')!r}"
            try:
                options = []
                for letter in LETTERS:
                    v = row.get(letter)
                    if v is None or v == "" or v.lower() == "nan":
                        break
                    options.append(v)
                raw = base64.b64decode(row["image"], validate=False)
                im = Image.open(io.BytesIO(raw))
                im.load()
                answer_type = row.get("answer_type") or ("choice" if options else "text")
                yield Sample(id=row.get("id") or str(row.get("index")), images=[im],
                             question=row["question"], answer=row["answer"], answer_type=answer_type,
                             options=options, question_type=row.get("question_type") or row.get("category", ""),
                             metadata=json.loads(row["metadata"]) if row.get("metadata") else {})
            except (KeyError, OSError, ValueError, DataError) as e:
                msg = f"{where}: malformed sample ({type(e).__name__}: {e})"
                if errors is None:
                    raise DataError(msg) from e
                errors.append(msg)
