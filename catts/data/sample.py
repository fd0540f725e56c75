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

Reading rules (both forms): a malformed row never stops the load. With an ``errors`` list it becomes
one entry ``{"source": file, "line": n, "id": id or None, "error": message}`` (``line`` is the
1-based line where the row starts, ``error`` the full message, the same text the DataError has when
no list is given) and the rest loads; without a list the first one raises DataError. Malformed: bad
JSON or CSV, bytes that are not UTF-8, a missing or mistyped field, an invalid sample (see
``Sample``), a duplicate id, base64 that does not decode. Images are *not* decoded while loading:
a JSONL row keeps its paths, a TSV row the decoded base64 bytes; a bad image is a DataError of
that one sample when ``Sample.load_images`` is called.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from catts.data.image import DataError, open_image

ANSWER_TYPES = ("choice", "number", "text")  # the one definition (catts.answers imports it)
LETTERS = string.ascii_uppercase  # option i has letter LETTERS[i]; the one definition


@dataclass
class Sample:
    """One question. Invalid (DataError naming the id): an unknown answer_type, a choice question
    without options or whose answer is not one of its option letters, an open (number/text)
    question whose gold answer is empty or whitespace, an image item of another type."""

    id: str
    images: list  # each a path (str/Path), the encoded bytes of an image file, or a PIL image
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
        elif not str(self.answer).strip():
            raise DataError(f"sample {self.id!r}: empty gold answer for a {self.answer_type} question")
        for im in self.images:
            if not isinstance(im, (str, Path, bytes, bytearray, Image.Image)):
                raise DataError(f"sample {self.id!r}: an image must be a path, bytes or a PIL image, "
                                f"not {type(im).__name__}")

    def load_images(self, max_pixels: int | None = None) -> list[Image.Image]:
        """Decode every image now with ``catts.data.image.open_image``: paths are read, bytes decoded,
        PIL images returned as they are. Any failure (missing file, corrupt or truncated data,
        decompression bomb, ...) raises DataError naming the sample and the image. ``max_pixels``
        lets a huge JPEG decode at a reduced scale; the result still needs ``fit_image``."""
        where = f"sample {self.id!r}"
        return [open_image(im, where=where, max_pixels=max_pixels) for im in self.images]

    @property
    def option_letters(self) -> str:
        return LETTERS[: len(self.options)]


# ---------------------------------------------------------------------------- writing

_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def _image_ext(im) -> str:
    """File suffix for an image item: PIL -> .png, bytes by their magic number (else .bin), a path's own."""
    if isinstance(im, Image.Image):
        return ".png"
    if isinstance(im, (bytes, bytearray)):
        if im[:4] == b"RIFF" and im[8:12] == b"WEBP":
            return ".webp"
        return next((ext for magic, ext in _MAGIC if im.startswith(magic)), ".bin")
    return Path(im).suffix


def _image_bytes(im) -> bytes:
    """The encoded file of an image item: bytes as they are, a path's file, a PIL image as PNG."""
    if isinstance(im, (bytes, bytearray)):
        return bytes(im)
    if not isinstance(im, Image.Image):
        return Path(im).read_bytes()
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(samples: Iterable[Sample], path: str | Path, image_dir: str = "images") -> Path:
    """Write samples to ``path``; every image's file is written under ``image_dir`` beside it
    (PIL images as PNG, bytes and files copied as they are, so a broken image stays broken)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / image_dir).mkdir(exist_ok=True)
    used: set[str] = set()
    with path.open("w") as f:
        for s in samples:
            rels = []
            for k, im in enumerate(s.images):
                suffix = f"_{k}" if len(s.images) > 1 else ""
                ext = _image_ext(im)
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

# ---------------------------------------------------------------------------- reading


def _report(errors: list[dict] | None, source: Path, line: int, sample_id: str | None, problem: str,
            cause: BaseException | None = None) -> None:
    """One malformed row: append ``{"source", "line", "id", "error"}`` to ``errors``, or raise."""
    sample_id = None if sample_id is None else _printable(str(sample_id))
    message = _printable(f"{source}:{line}" + ("" if sample_id is None else f" id={sample_id!r}") + f": {problem}")
    if errors is None:
        raise DataError(message) from cause
    errors.append({"source": str(source), "line": line, "id": sample_id, "error": message})


def _printable(text: str) -> str:
    """Undo surrogateescape: undecodable bytes become U+FFFD, so entries can be stored as JSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unique(rows: Iterator[tuple[int, Sample]], source: Path, errors: list[dict] | None) -> Iterator[Sample]:
    """Pass samples on; a repeated id is a malformed row (runs key their records by id)."""
    first: dict[str, int] = {}
    for line, sample in rows:
        if sample.id in first:
            _report(errors, source, line, sample.id, f"duplicate id (first on line {first[sample.id]})")
            continue
        first[sample.id] = line
        yield sample


_KNOWN = {"id", "images", "image", "question", "options", "answer", "answer_type", "question_type", "metadata"}


def _scalar(value, what: str) -> str:
    """A string; a number is accepted and written as text; anything else (null, list, bool) is not."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{what} must be a string, not {type(value).__name__}")
    return str(value)


def _text(row: dict, key: str) -> str:
    if key not in row:
        raise DataError(f"missing {key!r}")
    return _scalar(row[key], repr(key))


def _from_row(row: dict, base: Path) -> Sample:
    """A JSONL object -> Sample; image paths are made relative to ``base`` (the file's folder)."""
    images = row.get("images", row.get("image"))
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p.strip() for p in images):
        raise DataError("'images' must be a non-empty list of paths")
    options = row.get("options") or []
    if not isinstance(options, list):
        raise DataError(f"'options' must be a list, not {type(options).__name__}")
    meta = row.get("metadata") or {}
    if not isinstance(meta, dict):
        raise DataError(f"'metadata' must be an object, not {type(meta).__name__}")
    meta = {**meta, **{k: v for k, v in row.items() if k not in _KNOWN}}
    return Sample(id=_text(row, "id"), images=[str(base / p) for p in images], question=_text(row, "question"),
                  answer=_text(row, "answer"), answer_type=row.get("answer_type", "text"),
                  options=[_scalar(o, "an option") for o in options],
                  question_type=str(row.get("question_type") or ""), metadata=meta)


def _guess_id(raw: bytes) -> str | None:
    """The id of a row that is not valid UTF-8, read with the bad bytes replaced (None if unreadable)."""
    try:
        row = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return str(row["id"]) if isinstance(row, dict) and "id" in row else None


def _jsonl_rows(path: Path, errors: list[dict] | None) -> Iterator[tuple[int, Sample]]:
    with path.open("rb") as f:  # bytes: one undecodable line must not end the file
        for n, raw in enumerate(f, 1):
            row_id = None
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"row is not a JSON object but a JSON {type(row).__name__}")
                row_id = str(row["id"]) if "id" in row else None
                sample = _from_row(row, path.parent)
            except UnicodeDecodeError as e:
                _report(errors, path, n, _guess_id(raw), f"malformed row: not valid UTF-8 ({e.reason}, "
                        f"byte {e.start})", e)
            except (ValueError, RecursionError) as e:  # JSONDecodeError and DataError are ValueErrors
                _report(errors, path, n, row_id, f"malformed sample ({type(e).__name__}: {e})", e)
            else:
                yield n, sample


def iter_jsonl(path: str | Path, errors: list[dict] | None = None) -> Iterator[Sample]:
    """Yield the samples of a JSONL file; blank lines are ignored. A malformed row is appended to
    ``errors`` as ``{"source", "line", "id", "error"}`` and skipped, or raised without a list."""
    path = Path(path)
    return _unique(_jsonl_rows(path, errors), path, errors)


TSV_REQUIRED = ("image", "question", "answer")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


def _check_cells(header: list[str], cells: list[str]) -> None:
    """As many cells as the header (extra empty cells allowed), all of them valid UTF-8."""
    if len(cells) < len(header):
        raise DataError(f"row has {len(cells)} cells, the header {len(header)}")
    if any(c.strip() for c in cells[len(header):]):
        raise DataError(f"row has {len(cells)} cells, the header only {len(header)}")
    bad = [_printable(h) for h, c in zip(header, cells) if _SURROGATE.search(c)]
    if bad:
        raise DataError(f"not valid UTF-8 (column {', '.join(bad)})")


def _tsv_image(cell: str, shared: dict[str, bytes]) -> bytes:
    """The image bytes of a cell: base64 (whitespace ignored), or VLMEvalKit's short reference to
    an earlier row's ``index`` whose image it shares."""
    text = "".join(cell.split())
    if not text:
        raise DataError("empty image cell")
    if len(text) <= 64 and text in shared:
        return shared[text]
    if text.isdigit():
        raise DataError(f"image cell {text!r} is neither base64 nor the index of an earlier row")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error is a ValueError
        raise DataError(f"image cell is not valid base64 ({e})") from e


def _from_tsv(header: list[str], cells: list[str], row_id: str, shared: dict[str, bytes]) -> Sample:
    _check_cells(header, cells)
    row = dict(zip(header, cells))
    options = []
    for letter in LETTERS:
        v = row.get(letter)
        if v is None or v == "" or v.lower() == "nan":
            break
        options.append(v)
    raw = _tsv_image(row["image"], shared)
    meta = json.loads(row["metadata"]) if row.get("metadata") else {}
    if not isinstance(meta, dict):
        raise DataError(f"metadata must be a JSON object, not {type(meta).__name__}")
    answer_type = row.get("answer_type") or ("choice" if options else "text")
    sample = Sample(id=row_id, images=[raw], question=row["question"], answer=row["answer"],
                    answer_type=answer_type, options=options, metadata=meta,
                    question_type=row.get("question_type") or row.get("category", ""))
    if row.get("index"):
        shared.setdefault(row["index"], raw)
    return sample


def _tsv_rows(path: Path, errors: list[dict] | None) -> Iterator[tuple[int, Sample]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:  # an empty file
            return
        missing = [c for c in TSV_REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}: the TSV lacks the required column(s) {', '.join(missing)} "
                            f"(it has {', '.join(_printable(h) for h in header) or 'none'})")
        shared: dict[str, bytes] = {}
        position = -1
        while True:
            n, row_id = reader.line_num + 1, None
            try:
                cells = next(reader)
                if not cells:
                    continue
                position += 1
                row = dict(zip(header, cells))
                row_id = _printable(row.get("id") or row.get("index") or str(position))
                sample = _from_tsv(header, cells, row_id, shared)
            except StopIteration:
                return
            except (csv.Error, ValueError) as e:  # DataError, JSONDecodeError are ValueErrors
                _report(errors, path, n, row_id, f"malformed sample ({type(e).__name__}: {e})", e)
            else:
                yield n, sample


def iter_tsv(path: str | Path, errors: list[dict] | None = None) -> Iterator[Sample]:
    """Read a VLMEvalKit-style TSV (ours or theirs: missing optional columns get defaults). The
    columns image, question and answer are required (DataError for the file). id: the ``id``
    column, else ``index``, else the row's 0-based position. Each sample keeps its image as the
    decoded base64 bytes; it is decoded by ``load_images``. Malformed rows as in ``iter_jsonl``."""
    path = Path(path)
    return _unique(_tsv_rows(path, errors), path, errors)
