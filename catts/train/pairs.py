"""Original/noisy image pairs for CDRL (spec sections 4 and 5) as a ``datasets.Dataset`` that TRL's GRPOTrainer reads.

One row per (sample, original level, noise level), columns:

- ``prompt``: conversational, ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
  build_prompt(sample)}]}]`` (TRL fills the image placeholder from the ``image`` column);
- ``image``: the original image (RGB, after ``fit_image`` when ``max_pixels`` is given), ``noisy_image``: the same
  image noised; both stored as PNG (lossless), read back as PIL images;
- ``answer``, ``answer_type``, ``options``: the gold answer and what ``catts.answers`` needs to grade against it;
- ``pair_id``: the group key of the rewards (the sample id; ``id@level`` when several noise levels are asked for,
  ``id@original_level/level`` when several original levels are);
- ``sample_id``, ``noise``, ``level``, ``original_level``: where the row came from.

TRL forwards every column but ``prompt`` to the reward functions (and to a rollout function), so the rollout can
score completions on ``noisy_image`` and the rewards can grade against ``answer``.

Noise (seeded by (seed, sample id, level), as everywhere in catts): ``key_region`` (default) is
``catts.perception.degrade.key_region_noise``: diffusion noise at step ``level`` on the top ``fraction`` of patches
ranked by ``saliency`` (a function image -> 2-D array, e.g. ``catts.perception.saliency.load_saliency(...)``;
None: the model-free spectral residual saliency); ``diffusion`` noises the whole image at step ``level``.
The spec fixes no level for CDRL; the default 500 is our choice (mid-schedule; pass a list for several levels).

Original levels (a catts extension, default ``(0,)``: the spec's clean originals): ``original_levels`` also makes rows
whose *original* image is already degraded, by diffusion at that step (an int) or by any catts degradation
(``"kind:level"``, e.g. ``"pure_noise:1"``, an image nothing of which is left); its noisy image is the noise above
applied on top. The ``original_level`` column names it as given (``"0"``, ``"856"``, ``"pure_noise:1"``). The
spec's rollouts on the original are the only ones GRPO trains on, so clean originals alone never show the policy an
image it cannot read: its confidence on such images is shaped only through the perception term's C'.
Degraded originals put the calibration term where the model is wrong (see docs/cdrl.md for what that measured).
"""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from catts.data.image import DataError, fit_image, to_rgb
from catts.data.sample import Sample
from catts.perception.degrade import degrade, key_region_noise, parse_degrade_spec
from catts.prompts import build_prompt

NOISES = ("key_region", "diffusion")
DEFAULT_LEVEL = 500
COLUMNS = ("prompt", "image", "noisy_image", "answer", "answer_type", "options", "pair_id", "sample_id", "noise",
           "level", "original_level")


def _features():
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    text = Value("string")
    return Features({  # [feature] is a list of it in every datasets version (List(...) is new in datasets 4)
        "prompt": [{"role": text, "content": [{"type": text, "text": text}]}],
        "image": ImageFeature(), "noisy_image": ImageFeature(),
        "answer": text, "answer_type": text, "options": [text],
        "pair_id": text, "sample_id": text, "noise": text, "level": Value("int32"),
        "original_level": text,
    })


def _png(image: Image.Image) -> dict:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def image_fingerprint(image) -> str:
    """A digest of a PIL image's mode, size and pixels (the key of a pair's original image)."""
    im = image.convert("RGB")
    h = hashlib.sha1(f"{im.size}".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def conversational_prompt(sample: Sample) -> list[dict]:
    """The user turn of a sample in TRL's conversational form: one image placeholder, then ``build_prompt``."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": build_prompt(sample)}]}]


def noisy_copy(image: Image.Image, noise: str, level: int, *, seed: int, key: str, fraction: float = 0.25,
               saliency_map: np.ndarray | None = None) -> Image.Image:
    """The noised image of one pair (see the module)."""
    if noise == "key_region":
        return key_region_noise(image, level, fraction=fraction, saliency=saliency_map, seed=seed, key=key)
    if noise == "diffusion":
        return degrade(image, "diffusion", level, seed=seed, key=key)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def _original_spec(spec: int | str) -> tuple[str, tuple[str, int]]:
    """An original level as given -> (its label, (degradation kind, level)): a bare step is diffusion's, anything
    else goes through ``parse_degrade_spec`` (which checks it against the registry) and must name one level."""
    text = str(spec).strip()
    try:
        kind, levels = parse_degrade_spec(text if ":" in text else f"diffusion:{text}")
        if len(levels) != 1:
            raise ValueError(f"one level, got {len(levels)}")
    except ValueError as e:
        raise ValueError(f"original level {spec!r}: give a diffusion step (e.g. 856) or 'kind:level' "
                         f"(e.g. 'pure_noise:1'): {e}") from None
    return text, (kind, levels[0])


@functools.lru_cache(maxsize=None)
def is_clean_original(label: str) -> bool:
    """Whether an ``original_level`` label names the clean image (level 0 of any kind: ``"0"``, ``"diffusion:0"``)."""
    return _original_spec(label)[1][1] == 0


def build_pairs(samples: Iterable[Sample], *, noise: str = "key_region", level: int | Sequence[int] = DEFAULT_LEVEL,
                seed: int = 0, fraction: float = 0.25, saliency: Callable[[Image.Image], np.ndarray] | None = None,
                max_pixels: int | None = None, errors: list[dict] | None = None,
                original_levels: Sequence[int | str] = (0,)):
    """Original/noisy pairs of ``samples`` as a ``datasets.Dataset`` with the module's columns, one row per
    (sample, level). Deterministic in ``seed``.

    A sample whose image does not load, or that has not exactly one image, is skipped and appended to ``errors``
    as ``{"id": sample id, "error": message}``; without an ``errors`` list it raises DataError (catts's reading
    rule). A sample repeating another's question and image is left out (with another gold answer it is an error).
    ``fraction`` and ``saliency`` apply to ``key_region`` only.
    """
    from datasets import Dataset

    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    levels = [level] if isinstance(level, (int, np.integer)) else list(level)
    if not levels:
        raise ValueError("give at least one noise level")
    originals = [_original_spec(t) for t in original_levels]
    if not originals:
        raise ValueError("give at least one original level (0: the clean image)")
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    seen: dict[tuple[str, str], Sample] = {}
    for s in samples:
        try:
            images = s.load_images()
            if len(images) != 1:
                raise DataError(f"sample {s.id!r}: CDRL pairs take exactly one image, got {len(images)}")
            image = fit_image(images[0], max_pixels) if max_pixels else to_rgb(images[0])
            sal = saliency(image) if noise == "key_region" and saliency is not None else None
        except DataError as e:
            if errors is None:
                raise
            errors.append({"id": s.id, "error": str(e)})
            continue
        # a repeated question on the same image is one rollout prompt (the rollout finds rows by prompt and image)
        key = (build_prompt(s), image_fingerprint(image))
        if key in seen:
            if str(seen[key].answer) != str(s.answer):
                message = f"sample {s.id!r} repeats the question and image of {seen[key].id!r} with another answer"
                if errors is None:
                    raise DataError(message)
                errors.append({"id": s.id, "error": message})
            continue
        seen[key] = s
        for t0, (kind, t) in originals:
            base = degrade(image, kind, t, seed=seed, key=f"{s.id}/original") if t else image
            original = _png(base)
            for lv in levels:
                noisy = noisy_copy(base, noise, int(lv), seed=seed, key=s.id, fraction=fraction, saliency_map=sal)
                rows["prompt"].append(conversational_prompt(s))
                rows["image"].append(original)
                rows["noisy_image"].append(_png(noisy))
                rows["answer"].append(str(s.answer))
                rows["answer_type"].append(s.answer_type)
                rows["options"].append(list(s.options))
                pid = s.id if len(levels) == 1 else f"{s.id}@{int(lv)}"
                rows["pair_id"].append(pid if len(originals) == 1 else f"{s.id}@{t0}/{int(lv)}")
                rows["sample_id"].append(s.id)
                rows["noise"].append(noise)
                rows["level"].append(int(lv))
                rows["original_level"].append(t0)
    return Dataset.from_dict(rows, features=_features())
