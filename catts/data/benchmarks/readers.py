"""Raw rows of the layouts users download: Hugging Face parquet, VLMEvalKit TSV, the repos' JSON / JSONL.

Each reader yields ``RawRow``s: a row's 1-based ``line`` (a TSV or JSONL line, the first line of a
JSON entry, a parquet row's number in its file) and its cells as a dict, or an ``error`` for a row
that could not even be read. A file that cannot be read at all (not parquet, no header, a required
column missing) is one DataError for the file. Images are not decoded here; see ``TsvImages`` for
the VLMEvalKit image cells (base64, a list of them, or another row's ``index``).
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from catts.data.image import DataError
from catts.data.sample import LETTERS, _check_cells, _printable

REF_MAX = 64  # VLMEvalKit: an image cell this short is the index of the row whose image it reuses


@dataclass
class RawRow:
    source: Path
    line: int
    data: dict | None
    error: str | None = None


# ---------------------------------------------------------------------------- parquet


def parquet_files(path: Path, split: str) -> list[Path]:
    """A parquet file as it is; a folder: its ``<split>-*.parquet`` files (HF's ``data/`` and MMMU's
    per-subject folders) or the ``*.parquet`` files in folders named ``<split>``, searched below it."""
    if not path.is_dir():
        return [path]
    files = sorted(set(path.rglob(f"{split}-*.parquet")) | set(path.rglob(f"{split}/*.parquet")))
    if not files:
        raise DataError(f"no {split}-*.parquet file under {path}")
    return files


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - a dependency of catts
        raise DataError("reading parquet needs pyarrow (pip install pyarrow)") from e
    return pa, pq


def parquet_rows(path: Path, required: tuple[str, ...]) -> Iterator[RawRow]:
    pa, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{path}: the parquet file lacks the column(s) {', '.join(missing)} "
                        f"(it has {', '.join(names)})")
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=32):
            for row in batch.to_pylist():
                n += 1
                yield RawRow(path, n, row)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: parquet data unreadable after row {n} ({e})") from e


def hf_image(value, folder: Path):
    """An HF ``Image`` cell: ``{"bytes", "path"}`` -> the bytes, else the path (relative to ``folder``);
    a plain string is a path. None when the cell is empty."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
        if not value:
            return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        return resolve_path(value, folder)
    raise DataError(f"an image cell must hold bytes or a path, not {type(value).__name__}")



def hf_row_image(row: dict, folder):
    """A HF row's image: ``decoded_image`` (bytes or a path), else the ``image`` path; DataError if neither."""
    from catts.data.benchmarks.base import text_field  # base imports this module

    image = hf_image(row.get("decoded_image"), folder)
    if image is None and row.get("image"):
        image = resolve_path(text_field(row, "image"), folder)
    if image is None:
        raise DataError("no image (decoded_image and image are empty)")
    return image

def resolve_path(rel: str, folder: Path) -> str:
    """``rel`` below the file's folder, else below its parent (the MATH-V repo keeps ``data/`` and
    ``images/`` side by side), else below the folder all the same (a missing file fails on load)."""
    p = Path(rel)
    if p.is_absolute():
        return str(p)
    for base in (folder, folder.parent):
        if (base / p).exists():
            return str(base / p)
    return str(folder / p)


# ---------------------------------------------------------------------------- JSON / JSONL


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from e


_WS = re.compile(r"\s*")


def json_entries(path: Path) -> Iterator[RawRow]:
    """The entries of a JSON object (MathVista's ``testmini.json``: pid -> entry) or array, each
    with the line it starts on. A dict entry gets its key as ``_key``. Invalid JSON fails the file."""
    text = _decode(path.read_bytes(), path)
    try:
        top = json.loads(text)
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(top, (dict, list)):
        raise DataError(f"{path}: the JSON is a {type(top).__name__}, not an object or array of entries")
    dec, pos, line, last = json.JSONDecoder(), _WS.match(text).end() + 1, 1, 0
    while True:  # walk the top level again to find where each entry starts (the parse above succeeded)
        pos = _WS.match(text, pos).end()
        if text[pos] in "}]":
            return
        key = None
        if isinstance(top, dict):
            key, pos = dec.raw_decode(text, pos)
            pos = _WS.match(text, _WS.match(text, pos).end() + 1).end()  # past ':'
        line += text.count("\n", last, pos)
        last = pos
        value, pos = dec.raw_decode(text, pos)
        if isinstance(value, dict) and key is not None:
            value = {"_key": key, **value}
        yield RawRow(path, line, value if isinstance(value, dict) else None,
                     None if isinstance(value, dict) else f"entry is a JSON {type(value).__name__}, not an object")
        pos = _WS.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def jsonl_rows(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(path, n, None, f"not valid UTF-8 (byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:
                yield RawRow(path, n, None, f"bad JSON ({e})")
                continue
            if isinstance(row, dict):
                yield RawRow(path, n, row)
            else:
                yield RawRow(path, n, None, f"row is a JSON {type(row).__name__}, not an object")


# ---------------------------------------------------------------------------- VLMEvalKit TSV


def tsv_rows(path: Path, required: tuple[str, ...]) -> Iterator[RawRow]:
    """The rows of a TSV as pandas writes it (minimal quoting); cells stay strings."""
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: the TSV lacks the column(s) {', '.join(missing)} "
                            f"(it has {', '.join(_printable(h) for h in header)})")
        while True:
            n = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield RawRow(path, n, None, f"malformed TSV ({e})")
                continue
            if not cells:
                continue
            try:
                _check_cells(header, cells)
            except DataError as e:
                yield RawRow(path, n, dict(zip(header, cells)), str(e))
                continue
            yield RawRow(path, n, dict(zip(header, cells)))


def cell(row: dict, key: str) -> str | None:
    """A TSV cell's text, None when absent, empty or pandas' ``nan``."""
    v = row.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        return v
    return None if v.strip() == "" or v.strip().lower() == "nan" else v


def option_columns(row: dict) -> list[str]:
    """VLMEvalKit's option columns ``A``, ``B``, ... up to the first empty one; a filled one after it
    is a DataError."""
    options = []
    for letter in LETTERS:
        value = cell(row, letter)
        if value is None:
            break
        options.append(value)
    later = [x for x in LETTERS[len(options) + 1:] if cell(row, x) is not None]
    if later:
        raise DataError(f"option column {later[0]} is filled after an empty {LETTERS[len(options)]}")
    return options


def literal_list(text, what: str) -> list:
    """A list given as a list or as the Python-literal string of one (``"['a', 'b']"``)."""
    if isinstance(text, list):
        return text
    if text is None:
        return []
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise DataError(f"{what} {text[:60]!r} is not a Python list literal") from e
    if value is None:  # "None": what str() makes of a missing list
        return []
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{what} {text[:60]!r} is not a list")
    return list(value)


class TsvImages:
    """VLMEvalKit's image cells: base64, a Python-literal list of base64 strings, or (64 characters
    or fewer) the ``index`` of any row of the file, earlier or later, whose image it reuses. A row
    without an ``image`` falls back to ``image_path`` (one path or a list), relative to the TSV."""

    def __init__(self, rows: list[RawRow], folder: Path):
        self.folder = folder
        self.cells = {str(r.data.get("index", "")).strip(): r.data.get("image") or "" for r in rows
                      if r.data is not None and str(r.data.get("index", "")).strip()}
        self.cache: dict[str, list[bytes]] = {}

    def images(self, row: dict) -> list:
        if cell(row, "image") is not None:
            return self._resolve(row["image"], ())
        paths = cell(row, "image_path")
        if paths is not None:
            items = literal_list(paths, "image_path") if paths.strip().startswith("[") else [paths]
            return [resolve_path(str(p), self.folder) for p in items]
        raise DataError("empty 'image' cell (and no 'image_path')")

    def _resolve(self, text: str, seen: tuple[str, ...]) -> list[bytes]:
        compact = "".join(text.split())
        if len(compact) <= REF_MAX:
            if compact not in self.cells:
                raise DataError(f"image cell {compact!r} is not the index of any row")
            if compact in seen:
                raise DataError(f"image references loop: {' -> '.join(seen + (compact,))}")
            if compact not in self.cache:
                self.cache[compact] = self._resolve(self.cells[compact], seen + (compact,))
            return self.cache[compact]
        if compact.startswith("["):
            return [self._b64(str(item)) for item in literal_list(text, "image list")]
        return [self._b64(compact)]

    @staticmethod
    def _b64(text: str) -> bytes:
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as e:
            raise DataError(f"image cell is not valid base64 ({e})") from e
