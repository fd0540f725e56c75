"""Image degradations for original/noise image pairs (method.md section 4).

Every degradation is a small function ``(img: RGB PIL image, level, rng) -> RGB PIL image`` in the
``DEGRADATIONS`` registry; adding one means writing one function under ``@register(...)`` below.
``degrade(image, kind, level, seed=..., key=...)`` is the one entry point: it converts to RGB, checks
the level, and seeds a numpy Generator from a SHA-256 of (kind, level, seed, key), so the same sample
id gets the same noise on every machine and in every process (Python's ``hash()`` is salted per run).
Streams are stable for a given numpy version; numpy does not promise them across major versions.

Kinds and levels:
- ``diffusion`` t in 0..999: the forward process of Visual Contrastive Decoding, 1000 steps,
  ``betas = sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5``, ``abar = cumprod(1 - betas)``,
  ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` on x in [-1, 1], clamped, rounded back to uint8.
  Indices are 0-based, so t = 0 is *not* clean: it applies step 0 (abar_0 = 1 - beta_0, about
  1 - 2.2e-5, i.e. noise std of about 0.6 grey levels). At t = 999 abar is about 0.081, so a faint
  trace of the image survives (that is the schedule, not a bug). ``diffusion_levels(L)`` gives the
  probe sweep t_i = round(i * 999 / (L - 1)).
- ``gaussian_noise``, ``blur``, ``jpeg``, ``lowres``: severities 1..5 (ImageNet-C tables); level 0
  is defined as clean (returns the RGB copy), so a sweep can be written 0..5.
  * noise: sigma .08 .12 .18 .26 .38 on [0, 1], clipped, rounded.
  * blur: Pillow ``GaussianBlur(radius=sigma)``, sigma 1 2 3 4 6. In Pillow >= 9 (13.0 here) the
    ``radius`` argument *is* the standard deviation (its docstring: "Standard deviation of the
    Gaussian kernel"), realised as extended box filters, a close approximation of a true Gaussian.
  * jpeg: quality 25 18 15 10 7, in-memory round trip, 4:2:0 chroma subsampling set explicitly.
  * lowres: BOX (area-average) downscale by .6 .5 .4 .3 .25, then NEAREST back up to the original
    size: blocky pixels that a model's bilinear/bicubic resizer cannot smooth back into detail.
- ``key_region`` t in 0..999: diffusion noise at t only on the top ``fraction`` of patches ranked by
  a saliency map (a vision tower's attention, or the model-free ``spectral_residual_saliency``).
- ``none`` level 0: the RGB copy.
- ``pure_noise`` level 1 (0 clean): the diffusion's limit abar = 0, ``x = eps`` clamped: nothing of the image is
  left, only its size. A control: an image no model can read (CDRL trains on it, docs/cdrl.md).

Why hand-written rather than albumentations/imagecorruptions: the spec fixes exact numbers and
formulas, each is a few lines of numpy + Pillow, and catts must not pull in heavy dependencies
whose defaults (blur implementation, rounding, JPEG settings) change under us.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from catts.data.image import to_rgb  # the one mode normalisation; importable from here as before

# ---------------------------------------------------------------------------- image plumbing

def save_png(image: Image.Image, path: str | Path) -> Path:
    """Save losslessly as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _u8(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "RGB")

# ---------------------------------------------------------------------------- diffusion noise

STEPS = 1000
BETAS = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, STEPS))) * (5e-3 - 1e-5) + 1e-5
ALPHA_BARS = np.cumprod(1.0 - BETAS)


def diffusion_levels(L: int) -> list[int]:
    """L evenly spaced timesteps from 0 to 999: t_i = round(i * 999 / (L - 1))."""
    if L < 2:
        raise ValueError(f"need at least 2 levels, got {L}")
    return [round(i * (STEPS - 1) / (L - 1)) for i in range(L)]


def _diffuse(a: np.ndarray, t: int, rng: np.random.Generator, abar: float | None = None) -> np.ndarray:
    """uint8 HxWx3 -> float array in 0..255 (unrounded) after forward noise at step t (or at ``abar`` given)."""
    abar = ALPHA_BARS[t] if abar is None else abar
    x0 = a.astype(np.float64) / 127.5 - 1.0
    eps = rng.standard_normal(a.shape)
    xt = np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps
    return (np.clip(xt, -1.0, 1.0) + 1.0) * 127.5

# ---------------------------------------------------------------------------- saliency

def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian filter (truncated at 3 sigma, edge padding)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        p = np.pad(a, [(r, r) if ax == axis else (0, 0) for ax in (0, 1)], mode="edge")
        a = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, p)
    return a


def spectral_residual_saliency(image: Image.Image, width: int = 64, sigma: float = 2.5) -> np.ndarray:
    """Hou & Zhang (CVPR 2007) spectral residual saliency, HxW float array in [0, 1].

    Grayscale, resized to ``width`` px wide; L = log|F|, P = angle(F); residual R = L - mean3x3(L);
    S = |IFFT(exp(R + iP))|^2, Gaussian-smoothed, resized back to the image size. sigma 2.5 follows
    the authors' reference code (the paper's text gives 8, far coarser on a 64 px map).
    Our addition: |F| is floored at 1e-3 of its mean before the log, else the exact zeros of flat
    synthetic images make the residual spike into periodic artefacts; antialiased scenes (catts
    shapes) rank patches the same with or without the floor."""
    img = to_rgb(image)
    w, h = img.size
    small = img.convert("L").resize((width, max(1, round(h * width / w))), Image.BILINEAR)
    g = np.asarray(small, dtype=np.float64) / 255.0
    f = np.fft.fft2(g)
    amp = np.abs(f)  # floor: flat synthetic images have exact spectral zeros (log -> -inf)
    log_amp, phase = np.log(np.maximum(amp, 1e-3 * amp.mean())), np.angle(f)
    p = np.pad(log_amp, 1, mode="edge")
    mean3 = sum(p[i:i + g.shape[0], j:j + g.shape[1]] for i in range(3) for j in range(3)) / 9.0
    s = np.abs(np.fft.ifft2(np.exp(log_amp - mean3 + 1j * phase))) ** 2
    s = _smooth(s, sigma)
    s = np.asarray(Image.fromarray(s.astype(np.float32), "F").resize((w, h), Image.BILINEAR))
    s = s - s.min()
    return s / s.max() if s.max() > 0 else s


def _patch_mask(size: tuple[int, int], saliency: np.ndarray, fraction: float, patch: int) -> np.ndarray:
    """Boolean HxW mask of the top ``fraction`` of patches (ceil grid, edge patches partial)."""
    w, h = size
    sal = np.asarray(saliency, dtype=np.float32)
    if sal.ndim != 2 or not np.isfinite(sal).all():
        raise ValueError(f"saliency must be a finite 2-D array, got shape {sal.shape}")
    sal = np.asarray(Image.fromarray(sal, "F").resize((w, h), Image.BILINEAR), dtype=np.float64)
    gh, gw = -(-h // patch), -(-w // patch)
    pad = np.pad(sal, ((0, gh * patch - h), (0, gw * patch - w)), constant_values=np.nan)
    score = np.nanmean(pad.reshape(gh, patch, gw, patch), axis=(1, 3)).ravel()
    k = max(1, round(fraction * score.size))
    top = np.argsort(-score, kind="stable")[:k]  # ties: lower patch index (row-major) wins
    cells = np.zeros(gh * gw, dtype=bool)
    cells[top] = True
    big = np.repeat(np.repeat(cells.reshape(gh, gw), patch, 0), patch, 1)
    return big[:h, :w]


def _key_region(img: Image.Image, t: int, rng: np.random.Generator, fraction: float = 0.25,
                saliency: np.ndarray | None = None, patch: int | None = None) -> Image.Image:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    patch = patch or max(4, min(img.size) // 8)
    sal = spectral_residual_saliency(img) if saliency is None else saliency
    mask = _patch_mask(img.size, sal, fraction, patch)
    a = np.asarray(img)
    noisy = np.clip(np.round(_diffuse(a, t, rng)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(mask[..., None], noisy, a), "RGB")

# ---------------------------------------------------------------------------- registry

Fn = Callable[[Image.Image, int, np.random.Generator], Image.Image]


@dataclass(frozen=True)
class Degradation:
    name: str
    levels: range             # valid levels, inclusive of the clean level if any
    fn: Fn
    clean: int | None = None  # level that means "no degradation" (returns the RGB copy)


DEGRADATIONS: dict[str, Degradation] = {}
SEVERITIES = range(0, 6)    # 0 = clean, 1..5 = ImageNet-C severities
TIMESTEPS = range(0, STEPS)


def register(name: str, levels: range, clean: int | None = None) -> Callable[[Fn], Fn]:
    def wrap(fn: Fn) -> Fn:
        DEGRADATIONS[name] = Degradation(name, levels, fn, clean)
        return fn
    return wrap


@register("none", range(0, 1), clean=0)
def _none(img: Image.Image, level: int, rng: np.random.Generator) -> Image.Image:
    return img.copy()


@register("diffusion", TIMESTEPS)
def _diffusion(img: Image.Image, t: int, rng: np.random.Generator) -> Image.Image:
    return _u8(_diffuse(np.asarray(img), t, rng))


@register("pure_noise", range(0, 2), clean=0)
def _pure_noise(img: Image.Image, level: int, rng: np.random.Generator) -> Image.Image:
    return _u8(_diffuse(np.asarray(img), 0, rng, abar=0.0))


@register("key_region", TIMESTEPS)
def _key_region_default(img: Image.Image, t: int, rng: np.random.Generator) -> Image.Image:
    return _key_region(img, t, rng)


@register("gaussian_noise", SEVERITIES, clean=0)
def _gaussian_noise(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    x = np.asarray(img, dtype=np.float64) / 255.0
    return _u8(np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0) * 255.0)


@register("blur", SEVERITIES, clean=0)
def _blur(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=(1, 2, 3, 4, 6)[s - 1]))  # radius = sigma


@register("jpeg", SEVERITIES, clean=0)
def _jpeg(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=(25, 18, 15, 10, 7)[s - 1], subsampling="4:2:0")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@register("lowres", SEVERITIES, clean=0)
def _lowres(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    f = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    w, h = img.size
    small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX)
    return small.resize((w, h), Image.NEAREST)

# ---------------------------------------------------------------------------- entry points

def _rng(kind: str, level: int, seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"catts-degrade|{kind}|{level}|{seed}|{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _kind(kind: str) -> Degradation:
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; valid kinds: {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[kind]


def _check(kind: str, level: int) -> Degradation:
    d = _kind(kind)
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level not in d.levels:
        raise ValueError(f"level {level!r} invalid for {kind!r}; valid: "
                         f"{d.levels.start}..{d.levels.stop - 1}")
    return d


def degrade(image: Image.Image, kind: str, level: int, *, seed: int = 0, key: str = "") -> Image.Image:
    """Degrade ``image`` (any mode) -> RGB image of the same size, deterministic in (kind, level,
    seed, key); ``key`` is typically the sample id so that each sample gets its own noise."""
    d = _check(kind, level)
    img = to_rgb(image)
    if level == d.clean:
        return img
    out = d.fn(img, int(level), _rng(kind, int(level), seed, key))
    assert out.mode == "RGB" and out.size == img.size, (kind, out.mode, out.size)
    return out


def key_region_noise(image: Image.Image, level: int, *, fraction: float = 0.25,
                     saliency: np.ndarray | None = None, patch: int | None = None,
                     seed: int = 0, key: str = "") -> Image.Image:
    """Diffusion noise at step ``level`` on the top ``fraction`` of patches by ``saliency`` (any
    2-D array, resized bilinearly to the image; None -> ``spectral_residual_saliency``). ``patch``
    defaults to 1/8 of the short side, at least 4 px. With defaults, equals
    ``degrade(image, "key_region", level, seed=seed, key=key)``."""
    _check("key_region", level)
    return _key_region(to_rgb(image), int(level), _rng("key_region", int(level), seed, key),
                       fraction, saliency, patch)


def parse_degrade_spec(spec: str) -> tuple[str, list[int]]:
    """``"blur:1,2,3"`` -> ("blur", [1, 2, 3]); ``"diffusion:L8"`` -> ("diffusion",
    diffusion_levels(8)), the ``L`` form only for the timestep kinds (diffusion, key_region);
    ``"none"`` -> ("none", [0]). Levels are checked against the registry."""
    kind, _, rest = spec.strip().partition(":")
    kind, rest = kind.strip(), rest.strip()
    if kind == "none" and not rest:
        return "none", [0]
    d = _kind(kind)
    if not rest:
        raise ValueError(f"{spec!r}: give levels, e.g. 'blur:1,2,3' or 'diffusion:L8'")
    if rest[:1] in "Ll" and rest[1:].isdigit():
        if d.levels != TIMESTEPS:
            raise ValueError(f"{spec!r}: the L form is only for timestep kinds (0..999)")
        levels = diffusion_levels(int(rest[1:]))
    else:
        try:
            levels = [int(x) for x in rest.split(",")]
        except ValueError:
            raise ValueError(f"{spec!r}: levels must be comma-separated integers") from None
    for lv in levels:
        _check(kind, lv)
    return kind, levels
