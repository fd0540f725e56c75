"""``shapes``: catts's own seeded procedural benchmark of multi-object scenes.

Each 96x96 scene places 1-4 objects (circle, square, triangle in five colours) in distinct cells
of a 3x3 grid, with jitter in position and size. Questions ask what real benchmarks ask:

- ``count`` (numeric answer, as in MathVista): "How many circles are there?", "How many red objects...?"
- ``color`` / ``shape`` (multiple choice, lettered options, as in MMStar): attribute of an object
  picked out by its other attribute, so the answer needs binding colour to shape;
- ``relation`` (multiple choice): "Which object is left of the blue square?" (same row or column);
- ``exists`` (yes/no): "Is there a red square?" where red things and squares may both be present
  but not together, so a bag of features is not enough.

``metadata["explanation"]`` holds the step from the scene to the answer ("The square is red.");
the tiny models are trained to say it before they answer.

Everything derives from ``random.Random(f"shapes-{split}")``: the same split is the same data on
every machine. Splits: train 6,000 scenes, val 250, test 250, four questions per scene.
"""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import Image, ImageDraw

from catts.data.sample import DataError, Sample

SIZE = 96
GRID = 3
COLORS = {"red": (215, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 225),
          "yellow": (235, 195, 20), "purple": (145, 55, 190)}
SHAPES = ("circle", "square", "triangle")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
SCENES = {"train": 6000, "val": 250, "test": 250}
QUESTIONS_PER_SCENE = 4
SUPERSAMPLE = 4


def render(objects: list[dict], background: tuple[int, int, int]) -> Image.Image:
    """Draw objects ({shape, color, row, col, dx, dy, size}) antialiased by supersampling."""
    s = SUPERSAMPLE
    cell = SIZE // GRID
    im = Image.new("RGB", (SIZE * s, SIZE * s), background)
    draw = ImageDraw.Draw(im)
    for o in objects:
        cx = (o["col"] * cell + cell / 2 + o["dx"]) * s
        cy = (o["row"] * cell + cell / 2 + o["dy"]) * s
        r = o["size"] / 2 * s
        fill = COLORS[o["color"]]
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return im.resize((SIZE, SIZE), Image.LANCZOS)


def describe(objects: list[dict]) -> str:
    """What the scene shows, in reading order (the tiny model's rationale)."""
    parts = [f"{o['color']} {o['shape']} {ROWS[o['row']]} {COLS[o['col']]}"
             for o in sorted(objects, key=lambda o: (o["row"], o["col"]))]
    return "I see: " + ", ".join(parts) + "."


def _scene(rng: random.Random) -> tuple[list[dict], tuple[int, int, int]]:
    cells = rng.sample(range(GRID * GRID), rng.randint(1, 4))
    objects = [{"shape": rng.choice(SHAPES), "color": rng.choice(list(COLORS)), "row": c // GRID,
                "col": c % GRID, "size": rng.uniform(16, 24), "dx": rng.uniform(-4, 4),
                "dy": rng.uniform(-4, 4)} for c in cells]
    background = tuple(rng.randint(225, 255) for _ in range(3))
    return objects, background


def _options(rng: random.Random, correct: str, pool: list[str], n: int) -> tuple[list[str], str]:
    others = [p for p in dict.fromkeys(pool) if p != correct]
    options = [correct] + rng.sample(others, min(n - 1, len(others)))
    rng.shuffle(options)
    return options, "ABCDE"[options.index(correct)]


def _unique(objects: list[dict], key: str) -> list[dict]:
    return [o for o in objects if sum(p[key] == o[key] for p in objects) == 1]


def _question(kind: str, objects: list[dict], rng: random.Random) -> dict | None:
    """One question of ``kind`` about the scene, or None if the scene cannot pose it."""
    name = lambda o: f"{o['color']} {o['shape']}"  # noqa: E731
    if kind == "count":
        target = rng.choice(["shape", "color", "all"])
        if target == "all":
            return {"question": "How many objects are there?", "answer": str(len(objects)), "answer_type": "number",
                    "explanation": ""}
        value = rng.choice(SHAPES if target == "shape" else list(COLORS))
        n = sum(o[target] == value for o in objects)
        noun = f"{value}s" if target == "shape" else f"{value} objects"
        return {"question": f"How many {noun} are there?", "answer": str(n), "answer_type": "number",
                "explanation": ""}
    if kind in ("color", "shape"):
        by = "shape" if kind == "color" else "color"
        pick = _unique(objects, by)
        if not pick:
            return None
        o = rng.choice(pick)
        if kind == "color":
            q, why = f"What color is the {o['shape']}?", f"The {o['shape']} is {o['color']}."
            options, letter = _options(rng, o["color"], list(COLORS), 4)
        else:
            q, why = f"What shape is the {o['color']} object?", f"The {o['color']} object is a {o['shape']}."
            options, letter = _options(rng, o["shape"], list(SHAPES), 3)
        return {"question": q, "options": options, "answer": letter, "answer_type": "choice", "explanation": why}
    if kind == "relation":
        refs = [o for o in objects if sum(name(p) == name(o) for p in objects) == 1]
        rng.shuffle(refs)
        for ref in refs:
            rels = list(RELATIONS)
            rng.shuffle(rels)
            for rel in rels:
                drow, dcol = RELATIONS[rel]
                hits = [o for o in objects if o is not ref and
                        (o["row"] == ref["row"] and dcol and (o["col"] - ref["col"]) * dcol > 0 or
                         o["col"] == ref["col"] and drow and (o["row"] - ref["row"]) * drow > 0)]
                if len(hits) == 1 and name(hits[0]) != name(ref):
                    pool = [name(o) for o in objects if o is not ref and o is not hits[0]]
                    pool += [f"{c} {s}" for c in COLORS for s in SHAPES]
                    options, letter = _options(rng, name(hits[0]), pool, 4)
                    return {"question": f"Which object is {rel} the {name(ref)}?", "options": options,
                            "answer": letter, "answer_type": "choice",
                            "explanation": f"{rel.capitalize()} the {name(ref)} is the {name(hits[0])}."}
        return None
    if kind == "exists":
        present = {name(o) for o in objects}
        if rng.random() < 0.5:
            target = rng.choice(sorted(present))
            return {"question": f"Is there a {target}?", "answer": "yes", "answer_type": "text",
                    "explanation": f"There is a {target}."}
        # sorted: set order depends on PYTHONHASHSEED, and the split must be the same in every process
        colors, shapes = sorted({o["color"] for o in objects}), sorted({o["shape"] for o in objects})
        absent = [f"{c} {s}" for c in colors for s in shapes if f"{c} {s}" not in present]
        if not absent:  # no colour/shape mix-up is possible; ask about an absent colour instead
            absent = [f"{c} {s}" for c in COLORS for s in shapes if c not in colors]
        target = rng.choice(absent)
        return {"question": f"Is there a {target}?", "answer": "no", "answer_type": "text",
                "explanation": f"There is no {target}."}
    raise ValueError(kind)


QUESTION_TYPES = ("count", "color", "shape", "relation", "exists")


@lru_cache(maxsize=4)
def load_shapes(split: str) -> tuple[Sample, ...]:
    if split not in SCENES:
        raise DataError(f"shapes has splits {tuple(SCENES)}, not {split!r}")
    rng = random.Random(f"shapes-{split}")
    samples = []
    for scene_id in range(SCENES[split]):
        objects, background = _scene(rng)
        image = render(objects, background)
        kinds = list(QUESTION_TYPES)
        rng.shuffle(kinds)
        asked = 0
        for kind in kinds + ["count", "exists"]:
            if asked == QUESTIONS_PER_SCENE:
                break
            q = _question(kind, objects, rng)
            if q is None:
                continue
            samples.append(Sample(
                id=f"shapes-{split}-{scene_id:05d}-{asked}", images=[image], question=q["question"],
                answer=q["answer"], answer_type=q["answer_type"], options=q.get("options", []),
                question_type=kind,
                metadata={"scene": scene_id, "explanation": q["explanation"], "objects": [{k: o[k] for k in ("shape", "color", "row", "col")}
                                                         for o in objects]}))
            asked += 1
    return tuple(samples)
