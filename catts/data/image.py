"""The one place where catts opens and normalises images, for every path (data, eval, probe).

Rules:

- ``open_image(source, where=...)`` takes a path, the encoded bytes of an image file, or a PIL
  image, and returns a fully decoded PIL image (any mode). Every failure is a ``DataError`` whose
  message starts with ``where`` (the sample): a missing or unreadable file, truncated or corrupt
  bytes, a decompression bomb, a mode that cannot become RGB, a zero-size image. Any exception the
  decoder raises on untrusted bytes counts as the image's fault.
- Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left as it is. An image above it (Pillow's warning
  threshold) opens silently, without a ``DecompressionBombWarning`` per sample; one above twice
  the limit is a bomb and a ``DataError``, raised from the header before any pixel is allocated.
- ``to_rgb`` is the one mode normalisation: any mode -> 8-bit RGB. 16-bit data is scaled
  (round(v / 257), clipped to 0..255), not clipped the way Pillow's own ``convert`` does; alpha
  (and palette transparency) is composited on white; everything else goes through ``convert``.
- ``fit_image(image, max_pixels)`` is ``to_rgb`` plus a shrink, aspect kept, so that
  width * height <= max_pixels (each side at least 1 px; sides are truncated, never rounded up).
  Huge images are shrunk without full-size copies in a wider type: a not-yet-decoded JPEG is
  decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``), then the image is box-reduced by an integer
  factor (``Image.reduce``) while it stays at least twice the target on both sides, and only the
  rest is done by the final bicubic resize. 16-bit data is scaled in bands of rows with integer
  arithmetic, so no float buffer of the image's size is ever made.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

ImageSource = Union[str, Path, bytes, Image.Image]

REDUCE_GAP = 2       # box-reduce while the image stays >= REDUCE_GAP x the target on both sides
BAND_PIXELS = 1 << 18  # pixels per band when scaling 16-bit data (1 MB of int32)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "F")  # box averages mean something


class DataError(ValueError):
    """A malformed sample or image; the message names it. (Defined in this lowest module of
    ``catts.data`` so that nothing imports in a circle; ``catts.data`` re-exports it.)"""


# ---------------------------------------------------------------------------- opening


def describe(source: ImageSource) -> str:
    """A short human name for an image source, for error messages."""
    if isinstance(source, Image.Image):
        return f"<in-memory {source.mode} image {source.width}x{source.height}>"
    if isinstance(source, (bytes, bytearray)):
        return f"<embedded image, {len(source)} bytes>"
    return str(source)


def open_image(source: ImageSource, *, where: str, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (path, encoded bytes or PIL image) fully; any failure -> ``DataError``
    starting with ``where``. A PIL image is returned as it is (decoded if it was lazy).

    ``max_pixels`` is a hint for huge JPEGs: they are decoded at the smallest DCT scale that still
    holds ``fit_image``'s target size, so the caller's ``fit_image`` has less to do."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _decode(source, max_pixels)
    except DataError as e:
        raise DataError(f"{where}: {e}") from e
    except Exception as e:  # noqa: BLE001 -- a decoder fed hostile bytes may raise anything
        raise DataError(f"{where}: cannot read image {describe(source)}: {_reason(e)}") from e
    return image


def _decode(source: ImageSource, max_pixels: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        image = source
    else:
        data = _read(source)
        if not data:
            raise DataError(f"image {describe(source)} is empty (0 bytes)")
        image = Image.open(io.BytesIO(data))  # from memory: no file handle is left open
    if max_pixels:
        _draft(image, target_size(image.size, max_pixels))
    image.load()
    if image.width < 1 or image.height < 1:
        raise DataError(f"image {describe(source)} has zero size ({image.width}x{image.height})")
    try:
        to_rgb(image.crop((0, 0, 1, 1)))
    except (ValueError, OSError) as e:
        raise DataError(f"image {describe(source)}: mode {image.mode!r} cannot become RGB ({e})") from e
    return image


def _read(source: str | Path | bytes | bytearray) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"image {path} does not exist" if not path.exists() else f"image {path} is not a file")
    return path.read_bytes()


def _reason(e: Exception) -> str:
    if isinstance(e, Image.DecompressionBombError):
        return f"decompression bomb ({e})"
    if isinstance(e, Image.UnidentifiedImageError):  # Pillow's text names a BytesIO object
        return "not an image format Pillow can identify"
    return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------- normalising


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> a new 8-bit RGB image. Alpha is composited on white; 16-bit data is
    scaled (round(v / 257), clipped to 0..255), not clipped as Pillow's own convert would do; mode
    ``I`` is taken to hold 16-bit data (that is how Pillow opens 16-bit PNGs). Everything else
    (P, L, 1, CMYK, YCbCr, ...) goes via convert; palette transparency counts as alpha."""
    if image.mode.startswith("I"):  # I, I;16, I;16B, I;16L, ...
        return _scale_16bit(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # convert() always returns a copy, even for RGB


def _scale_16bit(image: Image.Image) -> Image.Image:
    """16-bit (``I*`` modes) -> ``L`` with round(v / 257) clipped to 0..255, in bands of rows.

    For integers v in 0..65535, round(v / 257) == (v + 128) // 257 exactly (v / 257 is never
    halfway between two integers), so integer arithmetic gives the float formula's result."""
    w, h = image.size
    out = np.empty((h, w), np.uint8)
    band = max(1, BAND_PIXELS // max(1, w))
    for y in range(0, h, band):
        a = np.array(image.crop((0, y, w, min(h, y + band))), dtype=np.int32)  # a writable copy
        np.clip(a, 0, 65535, out=a)
        a += 128
        a //= 257
        out[y:y + band] = a
    return Image.fromarray(out, "L")


def target_size(size: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """The size ``fit_image`` shrinks ``size`` to: aspect kept, width * height <= max_pixels,
    sides truncated and at least 1 px. Unchanged when it already fits or max_pixels is None/0."""
    w, h = size
    if not max_pixels or w * h <= max_pixels:
        return w, h
    if max_pixels < 0:
        raise ValueError(f"max_pixels must be positive or None, got {max_pixels}")
    scale = math.sqrt(max_pixels / (w * h))
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    if tw * th > max_pixels:  # float rounding, or a side clamped to 1 px: trim the longer side
        if tw >= th:
            tw = max(1, max_pixels // th)
        else:
            th = max(1, max_pixels // tw)
    return tw, th


def fit_image(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """A new RGB image (``to_rgb``), shrunk with aspect kept so that width * height <= max_pixels
    (None or 0: no limit). Huge images are drafted (JPEG) and box-reduced before the final
    bicubic resize, so memory stays near the decoded image's own size."""
    size = target_size(image.size, max_pixels)
    if size == image.size:
        return to_rgb(image)
    _draft(image, size)
    image = _reduce(image, size)
    rgb = to_rgb(image)
    return rgb if rgb.size == size else rgb.resize(size, Image.BICUBIC)


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Let a not-yet-decoded JPEG decode at 1/2, 1/4 or 1/8 scale, never below ``size``.
    A no-op for other formats and for images already decoded."""
    if image.format == "JPEG" and image.tile and size != image.size:
        image.draft(None, size)


def _reduce(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Box-reduce by the largest integer factor that keeps >= REDUCE_GAP x ``size`` per side."""
    factor = min(image.width // size[0], image.height // size[1]) // REDUCE_GAP
    if factor < 2:
        return image
    return _reducible(image).reduce(factor)


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode whose box average equals averaging after ``to_rgb`` (up to rounding)."""
    if image.mode in _REDUCIBLE:
        return image
    if image.mode.startswith("I"):
        return _scale_16bit(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    return to_rgb(image)
