import math

import numpy as np
import pytest
from PIL import Image

from catts.perception.degrade import (ALPHA_BARS, BETAS, DEGRADATIONS, degrade, diffusion_levels,
                                      key_region_noise, parse_degrade_spec, save_png,
                                      spectral_residual_saliency, to_rgb)


def textured(size: int = 64, seed: int = 0) -> Image.Image:
    """Random pixels: lots of high-frequency detail, mid-range values."""
    a = np.random.default_rng(seed).integers(30, 226, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB")


def scene(size: int = 64) -> Image.Image:
    """Smooth gradients, a stripe pattern, a red block and mild sensor-like noise: photo-ish."""
    y, x = np.mgrid[0:size, 0:size] / size
    a = np.stack([200 * x + 30, 120 + 80 * np.sin(12 * x + 7 * y), 220 - 180 * y], -1)
    a[size // 4: size // 2, size // 3: 2 * size // 3] = (240, 30, 40)
    a += np.random.default_rng(0).normal(0, 6, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def hf_energy(img: Image.Image) -> float:
    g = arr(img.convert("L"))
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


def mse(a: Image.Image, b: Image.Image) -> float:
    return float(np.mean((arr(a) - arr(b)) ** 2))


# ---------------------------------------------------------------- diffusion schedule

def test_beta_schedule_by_hand():
    betas, abar, prod = [], [], 1.0
    for i in range(1000):
        x = -6.0 + 12.0 * i / 999
        b = 1.0 / (1.0 + math.exp(-x)) * (5e-3 - 1e-5) + 1e-5
        prod *= 1.0 - b
        betas.append(b)
        abar.append(prod)
    assert len(BETAS) == len(ALPHA_BARS) == 1000
    assert np.allclose(BETAS, betas, rtol=1e-12, atol=0)
    assert ALPHA_BARS[0] == pytest.approx(1 - betas[0], rel=1e-12)
    assert ALPHA_BARS[999] == pytest.approx(abar[999], rel=1e-9)
    assert 0.07 < ALPHA_BARS[999] < 0.09  # VCD's schedule leaves a faint trace at t = 999


def test_diffusion_levels():
    assert diffusion_levels(2) == [0, 999]
    assert diffusion_levels(8) == [0, 143, 285, 428, 571, 714, 856, 999]
    with pytest.raises(ValueError):
        diffusion_levels(1)


def corr(a: Image.Image, b: Image.Image) -> float:
    return float(np.corrcoef(arr(a).ravel(), arr(b).ravel())[0, 1])


def test_diffusion_extremes():
    img = textured(64)
    assert corr(img, degrade(img, "diffusion", 999)) < 0.3
    assert corr(img, degrade(img, "diffusion", 50)) > 0.97
    t0 = degrade(img, "diffusion", 0)  # t = 0 still applies step 0: tiny but nonzero noise
    d = np.abs(arr(t0) - arr(img))
    assert d.max() <= 4 and d.mean() > 0
    corrs = [corr(img, degrade(img, "diffusion", t)) for t in diffusion_levels(5)]
    assert corrs == sorted(corrs, reverse=True)


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("kind,level", [("diffusion", 500), ("gaussian_noise", 3), ("key_region", 500)])
def test_deterministic(kind, level):
    img = textured(48)
    a = degrade(img, kind, level, seed=1, key="q17").tobytes()
    assert a == degrade(img, kind, level, seed=1, key="q17").tobytes()
    assert a != degrade(img, kind, level, seed=1, key="q18").tobytes()
    assert a != degrade(img, kind, level, seed=2, key="q17").tobytes()


def test_clean_levels_and_size():
    img = textured(50)
    for kind in ("gaussian_noise", "blur", "jpeg", "lowres", "none"):
        out = degrade(img, kind, 0)
        assert out.tobytes() == img.tobytes() and out is not img
    rect = textured(64).crop((0, 0, 61, 37))
    for kind, d in DEGRADATIONS.items():
        out = degrade(rect, kind, d.levels.stop - 1)
        assert out.mode == "RGB" and out.size == rect.size, kind


# ---------------------------------------------------------------- common corruptions

def test_gaussian_noise_std():
    gray = Image.new("RGB", (128, 128), (128, 128, 128))
    out = arr(degrade(gray, "gaussian_noise", 3))
    assert out.std() == pytest.approx(0.18 * 255, rel=0.10)
    assert abs(out.mean() - 128) < 2


def test_blur_monotone():
    img = textured(64)
    energies = [hf_energy(degrade(img, "blur", s)) for s in range(6)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_jpeg_error_grows():
    img = scene(64)
    errors = [mse(img, degrade(img, "jpeg", s)) for s in range(1, 6)]
    assert errors[0] > 0
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_lowres_keeps_size_loses_detail():
    img = scene(64)
    out = degrade(img, "lowres", 5)  # 0.25: 64 -> 16 -> 64, NEAREST blocks of 4x4
    assert out.size == img.size
    a = arr(out)
    assert np.array_equal(a, np.repeat(np.repeat(a[::4, ::4], 4, 0), 4, 1))
    fine = textured(64)  # pixel-level detail: more of it is lost at each severity
    errors = [mse(fine, degrade(fine, "lowres", s)) for s in range(6)]
    assert errors[0] == 0 and all(a < b for a, b in zip(errors, errors[1:])), errors
    assert hf_energy(degrade(fine, "lowres", 5)) < 0.5 * hf_energy(fine)


# ---------------------------------------------------------------- modes

def test_modes_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    p = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE)
    assert to_rgb(p).getpixel((0, 0)) == (10, 200, 30)
    assert to_rgb(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert to_rgb(Image.new("LA", (4, 4), (77, 255))).getpixel((0, 0)) == (77, 77, 77)
    i16 = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert i16.mode == "I;16"
    assert [to_rgb(i16).getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (100,) * 3, (255,) * 3]
    i32 = Image.fromarray(np.array([[257 * 50]], dtype=np.int32))
    assert i32.mode == "I" and to_rgb(i32).getpixel((0, 0)) == (50, 50, 50)
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)
    for img in (rgba, p, i16, cmyk):
        out = degrade(img, "blur", 2)
        assert out.mode == "RGB" and out.size == img.size
    path = save_png(degrade(textured(32), "diffusion", 300), tmp_path / "sub" / "x.png")
    assert Image.open(path).format == "PNG"
    assert Image.open(path).tobytes() == degrade(textured(32), "diffusion", 300).tobytes()


# ---------------------------------------------------------------- key region + saliency

def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.any(arr(a) != arr(b), axis=-1)


def test_key_region_fraction_default_saliency():
    img = textured(96)  # default patch 12 -> 8x8 grid, top 16 patches = 25 % of pixels
    out = degrade(img, "key_region", 500, key="s1")
    ch = changed(img, out)
    assert 0.22 < ch.mean() <= 0.25
    patches = ch.reshape(8, 12, 8, 12).any(axis=(1, 3))
    assert patches.sum() == 16  # whole patches, the rest untouched
    assert out.tobytes() == key_region_noise(img, 500, key="s1").tobytes()


def test_key_region_user_saliency():
    img = textured(96)
    sal = np.zeros((16, 16))
    sal[:8, :8] = 1.0  # any resolution: top-left quadrant is salient
    out = key_region_noise(img, 600, fraction=0.25, saliency=sal, seed=3)
    ch = changed(img, out)
    assert not ch[48:, :].any() and not ch[:, 48:].any()
    assert ch[:48, :48].mean() > 0.95
    half = key_region_noise(img, 600, fraction=0.5, saliency=sal, patch=8)
    assert 0.45 < changed(img, half).mean() <= 0.5
    with pytest.raises(ValueError):
        key_region_noise(img, 600, fraction=0.0)
    with pytest.raises(ValueError):
        key_region_noise(img, 600, saliency=np.zeros(5))


def test_spectral_residual_peaks_on_square():
    a = np.full((96, 128, 3), 60, dtype=np.uint8)
    a[30:46, 80:96] = 240
    s = spectral_residual_saliency(Image.fromarray(a, "RGB"))
    assert s.shape == (96, 128) and s.min() == 0.0 and s.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(s), s.shape)
    assert 26 <= y < 50 and 76 <= x < 100
    inside = s[30:46, 80:96].mean()
    far = np.concatenate([s[:, :40].ravel(), s[70:, :].ravel()]).mean()
    assert inside > 5 * far


# ---------------------------------------------------------------- errors + specs

def test_invalid_kind_and_level():
    img = textured(16)
    with pytest.raises(ValueError, match="valid kinds"):
        degrade(img, "fog", 1)
    for kind, level in [("blur", 6), ("blur", -1), ("diffusion", 1000), ("none", 1),
                        ("jpeg", 2.0), ("key_region", -1)]:
        with pytest.raises(ValueError, match="valid"):
            degrade(img, kind, level)


def test_parse_degrade_spec():
    assert parse_degrade_spec("blur:1,2,3") == ("blur", [1, 2, 3])
    assert parse_degrade_spec(" jpeg : 0, 5 ") == ("jpeg", [0, 5])
    assert parse_degrade_spec("diffusion:L8") == ("diffusion", diffusion_levels(8))
    assert parse_degrade_spec("key_region:L3") == ("key_region", [0, 500, 999])
    assert parse_degrade_spec("diffusion:0,999") == ("diffusion", [0, 999])
    assert parse_degrade_spec("none") == ("none", [0])
    for bad in ["blur:L8", "blur:7", "fog:1", "blur", "blur:a,b", "diffusion:1000"]:
        with pytest.raises(ValueError):
            parse_degrade_spec(bad)


def test_pure_noise_keeps_nothing_of_the_image():
    # the diffusion's limit (abar = 0): the output depends on the image's size only, not on its pixels
    a, b = Image.new("RGB", (24, 16), (255, 0, 0)), Image.new("RGB", (24, 16), (0, 0, 255))
    na, nb = degrade(a, "pure_noise", 1, key="k"), degrade(b, "pure_noise", 1, key="k")
    assert na.tobytes() == nb.tobytes() and na.size == (24, 16)
    x = np.asarray(na, dtype=float)
    assert 100 < x.mean() < 155 and x.std() > 60  # clamped standard normal around grey
    assert degrade(a, "pure_noise", 0).tobytes() == a.tobytes()
