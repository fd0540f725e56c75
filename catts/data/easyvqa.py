"""easy-VQA (MIT), read from the files of the PyPI package ``easy-vqa``: no network.

64x64 PNGs with one coloured shape; questions about its shape, its colour, or yes/no presence.
Splits: ``train`` (train images 0-3499), ``val`` (train images 3500-3999, held out for fitting
calibration maps), ``test`` (the package's 1,000 test images). Each image's shape and colour are
recovered from its own questions and stored in ``metadata`` (the tiny model's rationale uses them).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from catts.data.sample import DataError, Sample

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SPLITS = ("train", "val", "test")
VAL_FIRST_IMAGE = 3500


def _package_dir() -> Path:
    try:
        import easy_vqa
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise DataError("the embedded easyvqa data needs the 'easy-vqa' package (pip install easy-vqa)") from e
    return Path(easy_vqa.__file__).parent / "data"


def question_type(question: str) -> str:
    q = question.lower()
    if q.startswith(("what color", "what is the color")):
        return "color"
    if q.startswith("what"):
        return "shape"
    return "yes_no"


def _image_facts(questions: list[tuple[str, str, int]]) -> dict[int, dict]:
    """Shape and colour of each image, read off the answers of its open questions."""
    facts: dict[int, dict] = {}
    for text, answer, image_id in questions:
        f = facts.setdefault(image_id, {})
        if answer in SHAPES:
            f["shape"] = answer
        elif answer in COLORS:
            f["color"] = answer
        # yes/no questions also pin facts down: "is there a red shape?" -> yes
        m = re.match(r"^(?:is there a|is a|does the image contain a) (\w+)(?: shape)?(?: present| in the image)?\?$", text)
        if m and answer == "yes":
            word = m.group(1)
            f["shape" if word in SHAPES else "color"] = word
    return facts


# The package's palette (PIL colour names it draws with).
PALETTE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0),
           "gray": (128, 128, 128), "teal": (0, 128, 128), "brown": (165, 42, 42), "yellow": (255, 255, 0)}


def _facts_from_pixels(path: str) -> dict:
    """Shape and colour from the pixels, for images none of whose questions name them.

    Colour: the commonest foreground pixel's nearest palette entry. Shape: the share of the
    bounding box the shape fills (rectangle ~1, circle ~0.79, triangle ~0.65). On the train images
    whose questions give the answer this agrees on all colours and >99% of shapes.
    """
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    mask = np.abs(a - np.median(border, axis=0)).sum(-1) > 60
    if not mask.any():
        return {}
    colors, counts = np.unique(a[mask], axis=0, return_counts=True)
    rgb = colors[counts.argmax()]
    color = min(PALETTE, key=lambda k: sum((x - y) ** 2 for x, y in zip(PALETTE[k], rgb)))
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    shape = "rectangle" if fill > 0.9 else "circle" if fill > 0.70 else "triangle"
    return {"shape": shape, "color": color}


def explanation(question: str, facts: dict) -> str:
    """For yes/no questions, the fact the answer turns on ("There is no circle."); else ""."""
    words = re.findall(r"[a-z]+", question.lower())
    if question_type(question) != "yes_no" or not facts:
        return ""
    target = next((w for w in words if w in SHAPES or w in COLORS), None)
    if target is None:
        return ""
    present = target in (facts.get("shape"), facts.get("color"))
    thing = target if target in SHAPES else f"{target} shape"
    return f"There is a {thing}." if present else f"There is no {thing}."


@lru_cache(maxsize=4)
def load_easyvqa(split: str) -> tuple[Sample, ...]:
    if split not in SPLITS:
        raise DataError(f"easyvqa has splits {SPLITS}, not {split!r}")
    root = _package_dir() / ("test" if split == "test" else "train")
    qs = [tuple(q) for q in json.loads((root / "questions.json").read_text())]
    facts = _image_facts(qs)
    for image_id, f in facts.items():
        if "shape" not in f or "color" not in f:
            f.update({k: v for k, v in _facts_from_pixels(str(root / "images" / f"{image_id}.png")).items()
                      if k not in f})
    samples = []
    for n, (text, answer, image_id) in enumerate(qs):
        if split == "train" and image_id >= VAL_FIRST_IMAGE:
            continue
        if split == "val" and image_id < VAL_FIRST_IMAGE:
            continue
        samples.append(Sample(
            id=f"easyvqa-{split}-{n:05d}", images=[str(root / "images" / f"{image_id}.png")],
            question=text, answer=answer, answer_type="text", question_type=question_type(text),
            metadata={"image_id": image_id, **facts.get(image_id, {}),
                      "explanation": explanation(text, facts.get(image_id, {}))}))
    return tuple(samples)
