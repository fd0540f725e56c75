"""A hostile corpus: one JSONL file (+ images folder) and one TSV file full of bad rows and odd images.

``build_hostile_corpus(folder)`` writes ``folder/hostile.jsonl``, ``folder/images/`` and
``folder/hostile.tsv`` and returns what a careful reader must make of them (a stable contract,
also used to run the corpus through ``catts eval`` / ``catts probe`` end to end)::

    {"folder": str,
     "jsonl" | "tsv": {
        "path": str,                     # the data file
        "rows": int,                     # data rows in it (blank lines and the TSV header excluded)
        "ok": {id: {"rgb": [r, g, b], "tol": int, "size": [w, h]}},
              # load and decode; every pixel of to_rgb(image) is within tol of rgb
        "use_errors": {id: substring},   # load as samples; load_images() raises a DataError
                                         # naming the id and containing substring
        "load_errors": [{"line": int, "id": str | None, "match": substring}],
              # load_data(path, errors) reports exactly these rows (1-based line, id, message part)
     }}

Every row is in exactly one group: rows == len(ok) + len(use_errors) + len(load_errors).

Run as a script to write a corpus for the CLI: ``python tests/hostile.py OUTDIR`` (adds
``OUTDIR/expected.json``; ``--huge`` adds a 9500x9500 image above Pillow's warning threshold).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

# ---------------------------------------------------------------------------- image files


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_1bit_png(side: int) -> bytes:
    """A valid side x side 1-bit black PNG, written by hand (zlib of zeros): tiny on disk, side**2
    bytes once Pillow decodes it. side=20000 is a decompression bomb (400M pixels > 2x Pillow's
    default limit of 89,478,485); side=9500 is above the warning threshold but below the bomb."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _palette_transparent() -> bytes:
    p = Image.new("P", (12, 10), 0)
    p.putpalette([0, 128, 0, 0, 0, 200])
    buf = io.BytesIO()
    p.save(buf, format="PNG", transparency=0)  # index 0 (green) is fully transparent -> white
    return buf.getvalue()


def _noisy_png(rng: random.Random) -> bytes:
    return png(Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)))


def image_files(rng: random.Random) -> dict[str, tuple[bytes, dict | str]]:
    """name -> (file bytes, {"rgb", "tol", "size"} if it must decode, else the expected error part)."""
    def ok(rgb, size, tol=0):
        return {"rgb": list(rgb), "tol": tol, "size": list(size)}

    good = {f"good-{k}": c for k, c in enumerate([(200, 30, 40), (20, 160, 60), (30, 40, 220), (240, 200, 0)], 1)}
    files = {name: (png(Image.new("RGB", (16, 12), c)), ok(c, (16, 12))) for name, c in good.items()}
    files["good-jpeg"] = (jpeg(Image.new("RGB", (20, 10), (90, 120, 150))), ok((90, 120, 150), (20, 10), 6))
    files["gray16"] = (png(Image.new("I;16", (10, 8), 32768)), ok((128, 128, 128), (10, 8)))
    files["rgba-half"] = (png(Image.new("RGBA", (8, 8), (0, 0, 255, 128))), ok((127, 127, 255), (8, 8), 1))
    files["palette-transparent"] = (_palette_transparent(), ok((255, 255, 255), (12, 10)))
    files["onebit"] = (png(Image.new("1", (9, 7), 0)), ok((0, 0, 0), (9, 7)))
    files["cmyk-jpeg"] = (jpeg(Image.new("CMYK", (16, 16), (0, 255, 255, 0))), ok((255, 0, 0), (16, 16), 8))
    noisy = _noisy_png(rng)
    files["truncated-png"] = (noisy[: len(noisy) // 2], "cannot read image")
    files["corrupt-jpeg"] = (b"\xff\xd8\xff\xe0" + rng.randbytes(2000), "cannot read image")
    files["bomb"] = (black_1bit_png(20000), "decompression bomb")
    files["zero-bytes"] = (b"", "is empty (0 bytes)")
    return files

# ---------------------------------------------------------------------------- rows


def _row(sid: str, question: str = "What color is it?", answer: str = "red", answer_type: str = "text",
         options: list[str] | None = None) -> dict:
    return {"id": sid, "question": question, "answer": answer, "answer_type": answer_type,
            "options": options or [], "question_type": "hostile"}


def _image_rows(files: dict) -> list[dict]:
    """One row per image file, with a mix of answer types among the good ones."""
    rows = []
    for k, name in enumerate(files):
        if k % 3 == 0:
            rows.append(_row(name, "Which color?", "A", "choice", ["red", "green", "blue"]))
        elif k % 3 == 1:
            rows.append(_row(name, "How many objects are there?", "1", "number"))
        else:
            rows.append(_row(name))
    return rows


def _bad_rows() -> list[tuple[dict, str]]:
    """Rows that are invalid in both forms, with the expected message part."""
    return [(_row("bad-letter", answer="D", answer_type="choice", options=["red", "green"]),
             "not one of the option letters"),
            (_row("empty-gold", answer=""), "empty gold answer"),
            (_row("blank-gold", answer="   ", answer_type="number"), "empty gold answer"),
            (_row("good-1", question="A second row with an id already used"), "duplicate id")]


class _Expect:
    def __init__(self, path: Path):
        self.path, self.rows = path, 0
        self.ok, self.use_errors, self.load_errors = {}, {}, []

    def add(self, line: int, sid: str | None, outcome: dict | str, at_load: bool = False) -> None:
        self.rows += 1
        if at_load:
            self.load_errors.append({"line": line, "id": sid, "match": outcome})
        elif isinstance(outcome, dict):
            self.ok[sid] = outcome
        else:
            self.use_errors[sid] = outcome

    def as_dict(self) -> dict:
        return {"path": str(self.path), "rows": self.rows, "ok": self.ok, "use_errors": self.use_errors,
                "load_errors": self.load_errors}


def _image_path(name: str) -> str:
    return f"images/{name}.{'jpg' if 'jpeg' in name else 'png'}"


def _write_jsonl(folder: Path, files: dict) -> dict:
    exp = _Expect(folder / "hostile.jsonl")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines: list[bytes] = []

    def put(raw: bytes, sid: str | None, outcome, at_load: bool = False) -> None:
        lines.append(raw)
        exp.add(len(lines), sid, outcome, at_load)

    for k, row in enumerate(_image_rows(files)):
        data, outcome = files[row["id"]]
        rel = _image_path(row["id"])
        (folder / rel).write_bytes(data)
        put(json.dumps({**row, "images": [rel]}).encode(), row["id"], outcome)
        if k == 2:
            lines.append(b"   ")  # a blank line: ignored, and not a row
    put(json.dumps({**_row("missing-image"), "image": "images/nowhere.png"}).encode(),
        "missing-image", "does not exist")
    put(json.dumps({**_row("unicode-ok", "Wie viele Äpfel? 🍎"), "image": "images/good-2.png"}).encode(),
        "unicode-ok", files["good-2"][1])
    put(b'{"id": "broken-json", "image": "images/good-1.png", "question": ', None, "JSONDecodeError", True)
    put(b'["a", "list", "not", "an", "object"]', None, "not a JSON object", True)
    put(json.dumps({k: v for k, v in _row("no-question").items() if k != "question"}
                   | {"image": "images/good-1.png"}).encode(), "no-question", "missing 'question'", True)
    for row, match in _bad_rows():
        put(json.dumps({**row, "image": "images/good-3.png"}).encode(), row["id"], match, True)
    put(b'{"id": "latin1", "image": "images/good-1.png", "question": "Caf\xe9?", "answer": "x"}',
        "latin1", "not valid UTF-8", True)
    exp.path.write_bytes(b"\n".join(lines) + b"\n")
    return exp.as_dict()


TSV_COLUMNS = ["index", "id", "image", "question", "A", "B", "C", "answer", "answer_type", "question_type"]


def _tsv_line(index: int, row: dict, image: str) -> bytes:
    opts = (row["options"] + ["", "", ""])[:3]
    cells = [str(index), row["id"], image, row["question"], *opts, row["answer"], row["answer_type"],
             row["question_type"]]
    return "\t".join(cells).encode()


def _write_tsv(folder: Path, files: dict) -> dict:
    exp = _Expect(folder / "hostile.tsv")
    lines: list[bytes] = ["\t".join(TSV_COLUMNS).encode()]

    def put(raw: bytes, sid: str | None, outcome, at_load: bool = False) -> None:
        lines.append(raw)
        exp.add(len(lines), sid, outcome, at_load)

    for row in _image_rows(files):
        data, outcome = files[row["id"]]
        at_load = not data  # an empty cell is no image at all: malformed when loading
        put(_tsv_line(len(lines) - 1, row, base64.b64encode(data).decode()), row["id"],
            "empty image cell" if at_load else outcome, at_load)
    # VLMEvalKit's shared image: the cell holds the index of an earlier row (good-1 is index 0)
    put(_tsv_line(len(lines) - 1, _row("shared-image"), "0"), "shared-image", files["good-1"][1])
    put(_tsv_line(len(lines) - 1, _row("unicode-ok", "Wie viele Äpfel? 🍎"),
                  base64.b64encode(files["good-2"][0]).decode()), "unicode-ok", files["good-2"][1])
    good3 = base64.b64encode(files["good-3"][0]).decode()
    put(_tsv_line(len(lines) - 1, _row("bad-base64"), "@@@ not base64 @@@"), "bad-base64", "not valid base64", True)
    put(f"{len(lines) - 1}\tshort-row\t{good3}".encode(), "short-row", "cells", True)
    for row, match in _bad_rows():
        put(_tsv_line(len(lines) - 1, row, good3), row["id"], match, True)
    put(_tsv_line(len(lines) - 1, _row("latin1"), good3).replace(b"What color", b"Caf\xe9 color"),
        "latin1", "not valid UTF-8", True)
    exp.path.write_bytes(b"\n".join(lines) + b"\n")
    return exp.as_dict()


def build_hostile_corpus(folder: str | Path, *, huge: bool = False) -> dict:
    """Write the corpus into ``folder`` and return its expectations (shape in the module docstring).
    Deterministic. ``huge`` adds a good 9500x9500 black 1-bit image (row id ``huge``): above
    Pillow's warning threshold, so it must load without a warning; about 90 MB once decoded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = image_files(random.Random(0))
    if huge:
        files["huge"] = (black_1bit_png(9500), {"rgb": [0, 0, 0], "tol": 0, "size": [9500, 9500]})
    return {"folder": str(folder), "jsonl": _write_jsonl(folder, files), "tsv": _write_tsv(folder, files)}


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: python tests/hostile.py OUTDIR [--huge]")
    expected = build_hostile_corpus(argv[0], huge="--huge" in argv)
    (Path(argv[0]) / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False))
    for form in ("jsonl", "tsv"):
        e = expected[form]
        print(f"{e['path']}: {e['rows']} rows: {len(e['ok'])} good, {len(e['use_errors'])} fail when "
              f"their image is used, {len(e['load_errors'])} malformed")
    print(f"expectations: {Path(argv[0]) / 'expected.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
