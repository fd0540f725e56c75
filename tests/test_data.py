"""catts.data: sample validation, JSONL / TSV forms, the ``data export`` CLI, and the embedded datasets."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from catts.data import DataError, Sample, load_data, load_embedded, write_jsonl, write_tsv
from catts.data.sample import iter_jsonl, iter_tsv

FIELDS = ("id", "question", "options", "answer", "answer_type", "question_type", "metadata")


# ---------------------------------------------------------------- helpers


def pixels(sample: Sample) -> list[np.ndarray]:
    return [np.asarray(im) for im in sample.load_images()]


def assert_same_samples(got: list[Sample], want: list[Sample]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for f in FIELDS:
            assert getattr(g, f) == getattr(w, f), (w.id, f)
        gp, wp = pixels(g), pixels(w)
        assert len(gp) == len(wp), w.id
        for a, b in zip(gp, wp):
            assert a.shape == b.shape and a.dtype == b.dtype, w.id
            assert np.array_equal(a, b), w.id


def png_b64(color=(10, 200, 30), size=(8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def shapes20(shapes_test):
    return list(shapes_test[:20])


@pytest.fixture(scope="module")
def easyvqa_train():
    return load_embedded("easyvqa", "train")


@pytest.fixture(scope="module")
def easyvqa_val():
    return load_embedded("easyvqa", "val")


# ---------------------------------------------------------------- Sample validation


def test_sample_valid_choice_and_open():
    s = Sample(id="ok-1", images=[], question="q?", answer="B", answer_type="choice", options=["x", "y"])
    assert s.option_letters == "AB"
    t = Sample(id="ok-2", images=[], question="q?", answer="3", answer_type="number")
    assert t.options == [] and t.option_letters == ""


def test_sample_bad_answer_type_names_id():
    with pytest.raises(DataError, match=r"bad-type-7.*answer_type.*'mcq'"):
        Sample(id="bad-type-7", images=[], question="q?", answer="A", answer_type="mcq")


def test_sample_choice_without_options_names_id():
    with pytest.raises(DataError, match=r"no-opts-3.*needs options"):
        Sample(id="no-opts-3", images=[], question="q?", answer="A", answer_type="choice", options=[])


@pytest.mark.parametrize("answer", ["C", "a", "red", "", "AB"])
def test_sample_choice_answer_must_be_valid_letter(answer):
    with pytest.raises(DataError, match=r"bad-letter-1.*not one of the option letters"):
        Sample(id="bad-letter-1", images=[], question="q?", answer=answer, answer_type="choice",
               options=["red", "blue"])


@pytest.mark.parametrize("answer_type,answer", [("text", ""), ("text", "  \t"), ("number", ""), ("number", " ")])
def test_sample_open_question_needs_a_gold_answer(answer_type, answer):
    with pytest.raises(DataError, match=r"no-gold-2.*empty gold answer"):
        Sample(id="no-gold-2", images=[], question="q?", answer=answer, answer_type=answer_type)


def test_sample_image_items_are_paths_bytes_or_pil():
    Sample(id="ok-3", images=["a.png", Path("b.png"), b"\x89PNG", Image.new("RGB", (1, 1))], question="q?", answer="x")
    with pytest.raises(DataError, match=r"bad-img-4.*not int"):
        Sample(id="bad-img-4", images=[42], question="q?", answer="x")


def test_load_images_unreadable_names_sample(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    s = Sample(id="img-broken-9", images=[str(bad)], question="q?", answer="x")
    with pytest.raises(DataError, match=r"img-broken-9.*broken\.png"):
        s.load_images()


# ---------------------------------------------------------------- JSONL


def test_jsonl_roundtrip_identical(tmp_path, shapes20):
    path = write_jsonl(shapes20, tmp_path / "d" / "s.jsonl")
    got = list(iter_jsonl(path))
    assert_same_samples(got, shapes20)
    # the stored paths are relative to the file
    for line in path.read_text().splitlines():
        for p in json.loads(line)["images"]:
            assert not Path(p).is_absolute()
            assert (path.parent / p).is_file()


def test_jsonl_survives_moving_the_folder(tmp_path, shapes20):
    write_jsonl(shapes20, tmp_path / "orig" / "s.jsonl")
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.move(str(tmp_path / "orig"), str(moved))
    assert not (tmp_path / "orig").exists()
    got = load_data(str(moved / "s.jsonl"))
    assert_same_samples(got, shapes20)


def test_jsonl_path_images_are_copied(tmp_path, easyvqa_test):
    # easyvqa images are file paths, not in-memory images: the bytes are copied beside the JSONL
    src = list(easyvqa_test[:5])
    path = write_jsonl(src, tmp_path / "e.jsonl")
    got = list(iter_jsonl(path))
    assert_same_samples(got, src)
    for g in got:
        assert Path(g.images[0]).parent == tmp_path / "images"


def _malformed_jsonl(tmp_path, shapes20) -> Path:
    path = write_jsonl(shapes20[:4], tmp_path / "m.jsonl")
    lines = path.read_text().splitlines()
    no_question = json.loads(lines[1])
    del no_question["question"]
    bad_type = json.loads(lines[3])
    bad_type["answer_type"] = "essay"
    rows = [lines[0],                       # 1 good
            "{not json",                    # 2 bad JSON
            json.dumps(no_question),        # 3 missing question
            lines[2],                       # 4 good
            "[1, 2, 3]",                    # 5 not an object
            "",                             # 6 blank: ignored
            json.dumps(bad_type)]           # 7 invalid answer_type
    path.write_text("\n".join(rows) + "\n")
    return path


def test_jsonl_malformed_rows_reported_others_load(tmp_path, shapes20):
    path = _malformed_jsonl(tmp_path, shapes20)
    errors: list[dict] = []
    got = list(iter_jsonl(path, errors))
    assert [s.id for s in got] == [shapes20[0].id, shapes20[2].id]
    assert_same_samples(got, [shapes20[0], shapes20[2]])
    assert [(e["source"], e["line"], e["id"]) for e in errors] == \
        [(str(path), 2, None), (str(path), 3, shapes20[1].id), (str(path), 5, None), (str(path), 7, shapes20[3].id)]
    msgs = [e["error"] for e in errors]
    assert msgs[0].startswith(f"{path}:2: ")
    assert msgs[1].startswith(f"{path}:3 id={shapes20[1].id!r}: ") and "question" in msgs[1]
    assert msgs[2].startswith(f"{path}:5: ") and "not a JSON object" in msgs[2]
    assert msgs[3].startswith(f"{path}:7 id={shapes20[3].id!r}: ") and "essay" in msgs[3]
    # the entries are plain JSON (the run folder stores them)
    assert json.loads(json.dumps(errors)) == errors
    # load_data passes the errors list through
    errors2: list[dict] = []
    assert [s.id for s in load_data(str(path), errors2)] == [s.id for s in got]
    assert errors2 == errors


def test_jsonl_malformed_rows_raise_without_errors_list(tmp_path, shapes20):
    path = _malformed_jsonl(tmp_path, shapes20)
    with pytest.raises(DataError, match=re.escape(f"{path}:2")):
        list(iter_jsonl(path))
    with pytest.raises(DataError, match=re.escape(f"{path}:2")):
        load_data(str(path))
    # a file whose only bad row is the missing question
    good, no_q = path.read_text().splitlines()[0], path.read_text().splitlines()[2]
    p2 = tmp_path / "m2.jsonl"
    p2.write_text(good + "\n" + no_q + "\n")
    with pytest.raises(DataError, match=re.escape(f"{p2}:2") + r".*" + re.escape(repr(shapes20[1].id))):
        list(iter_jsonl(p2))


def test_jsonl_ids_with_the_same_safe_name_keep_their_own_images(tmp_path):
    colors = {"q/1": (255, 0, 0), "q_1": (0, 0, 255), "q 1": (0, 255, 0)}
    src = [Sample(id=i, images=[Image.new("RGB", (4, 4), c)], question="q?", answer="x") for i, c in colors.items()]
    # a two-image sample whose per-image names could clash with a single-image id
    src.append(Sample(id="z", images=[Image.new("RGB", (4, 4), (1, 2, 3)), Image.new("RGB", (4, 4), (4, 5, 6))],
                      question="q?", answer="x"))
    src.append(Sample(id="z_0", images=[Image.new("RGB", (4, 4), (7, 8, 9))], question="q?", answer="x"))
    got = load_data(str(write_jsonl(src, tmp_path / "c.jsonl")))
    assert_same_samples(got, src)
    assert len(set(p for s in got for p in s.images)) == 6


def test_jsonl_unknown_keys_kept_in_metadata(tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "x.png")
    row = {"id": "u1", "image": "x.png", "question": "q?", "answer": "yes", "source": "web",
           "metadata": {"k": 1}}
    (tmp_path / "u.jsonl").write_text(json.dumps(row) + "\n")
    [s] = load_data(str(tmp_path / "u.jsonl"))
    assert s.metadata == {"k": 1, "source": "web"}
    assert s.answer_type == "text" and s.options == []
    assert s.load_images()[0].size == (4, 4)


# ---------------------------------------------------------------- TSV


def test_tsv_roundtrip_identical(tmp_path, shapes20, easyvqa_test):
    for src in (shapes20, list(easyvqa_test[:20])):
        path = write_tsv(src, tmp_path / f"{src[0].id.split('-')[0]}.tsv")
        got = list(iter_tsv(path))
        assert_same_samples(got, src)
        assert all(isinstance(g.metadata, dict) for g in got)


def test_tsv_mixed_option_counts(tmp_path, shapes_test):
    # 3-option shape questions, 4-option colour questions and open count questions in one file
    by_type = {}
    for s in shapes_test:
        by_type.setdefault((s.question_type, len(s.options)), s)
    src = list(by_type.values())
    assert {len(s.options) for s in src} >= {0, 3, 4}
    got = list(iter_tsv(write_tsv(src, tmp_path / "mix.tsv")))
    assert_same_samples(got, src)


def test_tsv_plain_vlmevalkit_form(tmp_path):
    path = tmp_path / "vlmeval.tsv"
    rows = [["index", "image", "question", "A", "B", "C", "D", "answer", "category"],
            [0, png_b64((255, 0, 0)), "What color is it?", "red", "green", "blue", "yellow", "A", "color"],
            [1, png_b64((0, 0, 255), (5, 7)), "Which shape?", "circle", "square", "", "", "B", "shape"]]
    with path.open("w", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
    a, b = load_data(str(path))
    assert (a.id, a.answer_type, a.options, a.answer, a.question_type, a.metadata) == \
        ("0", "choice", ["red", "green", "blue", "yellow"], "A", "color", {})
    assert a.question == "What color is it?"
    assert np.array_equal(np.asarray(a.load_images()[0]), np.full((8, 8, 3), (255, 0, 0), np.uint8))
    assert (b.id, b.answer_type, b.options, b.answer, b.question_type) == \
        ("1", "choice", ["circle", "square"], "B", "shape")
    assert b.load_images()[0].size == (5, 7)


def test_tsv_broken_base64_reported_others_load(tmp_path, shapes20):
    path = write_tsv(shapes20[:3], tmp_path / "b.tsv")
    lines = path.read_text().split("\n")
    header = lines[0].split("\t")
    col = header.index("image")
    cells = lines[2].split("\t")  # data row for shapes20[1], file line 3
    cells[col] = "@@@this is not base64 at all@@@"
    lines[2] = "\t".join(cells)
    path.write_text("\n".join(lines))
    errors: list[dict] = []
    got = list(iter_tsv(path, errors))
    assert_same_samples(got, [shapes20[0], shapes20[2]])
    [e] = errors
    assert (e["line"], e["id"]) == (3, shapes20[1].id) and "base64" in e["error"]
    assert e["error"].startswith(f"{path}:3 id={shapes20[1].id!r}: ")
    with pytest.raises(DataError, match=re.escape(f"{path}:3")):
        load_data(str(path))


def test_tsv_truncated_image_fails_at_use_naming_the_sample(tmp_path, shapes20):
    # valid base64 of a cut-off PNG loads (images are decoded when used), then fails for that sample only
    path = write_tsv(shapes20[:2], tmp_path / "t.tsv")
    lines = path.read_text().split("\n")
    col = lines[0].split("\t").index("image")
    cells = lines[1].split("\t")
    cells[col] = base64.b64encode(base64.b64decode(cells[col])[:40]).decode()
    lines[1] = "\t".join(cells)
    path.write_text("\n".join(lines))
    errors: list[dict] = []
    first, second = iter_tsv(path, errors)
    assert errors == [] and isinstance(first.images[0], bytes)
    with pytest.raises(DataError, match=re.escape(repr(shapes20[0].id)) + r".*cannot read image"):
        first.load_images()
    assert_same_samples([second], [shapes20[1]])


def test_tsv_rejects_multi_image_sample(tmp_path, shapes20):
    s = shapes20[0]
    two = Sample(id="two-imgs", images=[s.images[0], s.images[0]], question="q?", answer="x")
    with pytest.raises(DataError, match="two-imgs"):
        write_tsv([two], tmp_path / "x.tsv")


# ---------------------------------------------------------------- CLI export roundtrip


def _export(tmp_path, name, split, fmt, limit) -> Path:
    from catts.cli import app

    out = tmp_path / f"out_{name}_{fmt}"
    res = CliRunner().invoke(app, ["data", "export", name, "--split", split, "--format", fmt,
                                   "--out", str(out), "--limit", str(limit)])
    assert res.exit_code == 0, res.output
    path = out / f"{name}_{split}.{fmt}"
    assert path.is_file()
    assert str(path) in res.stdout
    return path


@pytest.mark.parametrize("name,fmt", [("easyvqa", "tsv"), ("shapes", "jsonl")])
def test_cli_export_roundtrip(tmp_path, name, fmt):
    path = _export(tmp_path, name, "test", fmt, 200)
    got = load_data(str(path))
    want = load_data(f"{name}:test")[:200]
    assert len(want) == 200
    assert_same_samples(got, want)


def test_cli_export_bad_format_and_name(tmp_path):
    from catts.cli import app

    res = CliRunner().invoke(app, ["data", "export", "shapes", "--format", "csv", "--out", str(tmp_path),
                                   "--limit", "3"])
    assert res.exit_code == 2
    assert not list(tmp_path.iterdir())
    res = CliRunner().invoke(app, ["data", "export", "nosuch", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- load_data errors


def test_load_data_unknown_embedded_name():
    with pytest.raises(DataError, match=r"no embedded dataset 'nosuch'.*easyvqa.*shapes"):
        load_data("nosuch:test")


@pytest.mark.parametrize("name", ["easyvqa", "shapes"])
def test_load_data_missing_or_bad_split(name):
    with pytest.raises(DataError, match=r"NAME:SPLIT.*easyvqa:test"):
        load_data(name)
    with pytest.raises(DataError, match=rf"{name} has splits .*'train'.*'val'.*'test'.*'dev'"):
        load_data(f"{name}:dev")


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_load_data_nonexistent_file(tmp_path, suffix):
    missing = tmp_path / "nowhere" / f"data{suffix}"
    with pytest.raises(DataError, match=rf"{re.escape(str(missing))} does not exist"):
        load_data(str(missing))


# ---------------------------------------------------------------- easyvqa


def test_easyvqa_split_sizes(easyvqa_train, easyvqa_val, easyvqa_test):
    assert (len(easyvqa_train), len(easyvqa_val), len(easyvqa_test)) == (33742, 4833, 9673)
    ids = [s.id for split in (easyvqa_train, easyvqa_val, easyvqa_test) for s in split]
    assert len(ids) == len(set(ids))


def test_easyvqa_val_train_images_disjoint(easyvqa_train, easyvqa_val, easyvqa_test):
    train_imgs = {s.images[0] for s in easyvqa_train}
    val_imgs = {s.images[0] for s in easyvqa_val}
    assert train_imgs and val_imgs and not train_imgs & val_imgs
    assert max(s.metadata["image_id"] for s in easyvqa_train) < min(s.metadata["image_id"] for s in easyvqa_val)
    assert len({s.metadata["image_id"] for s in easyvqa_val}) == 500
    assert len({s.metadata["image_id"] for s in easyvqa_test}) == 1000
    for split in (easyvqa_train, easyvqa_val, easyvqa_test):
        for s in split[::97]:
            assert Path(s.images[0]).name == f"{s.metadata['image_id']}.png"
            assert Path(s.images[0]).is_file()


def test_easyvqa_metadata_complete(easyvqa_train, easyvqa_val, easyvqa_test):
    from catts.data.easyvqa import COLORS, SHAPES

    for split in (easyvqa_train, easyvqa_val, easyvqa_test):
        for s in split:
            assert s.metadata.get("shape") in SHAPES, s.id
            assert s.metadata.get("color") in COLORS, s.id
        # one image, one shape and colour: all questions of an image agree
        per_image = {}
        for s in split:
            facts = (s.metadata["shape"], s.metadata["color"])
            assert per_image.setdefault(s.metadata["image_id"], facts) == facts


@pytest.mark.parametrize("question,label", [
    ("what color is the shape?", "color"),
    ("what is the color of the circle?", "color"),
    ("what is the color of the shape?", "color"),
    ("what shape is in the image?", "shape"),
    ("what is the red shape?", "shape"),
    ("what shape does the image contain?", "shape"),
    ("is there a red shape?", "yes_no"),
    ("does the image not contain a triangle?", "yes_no"),
    ("is no blue shape present?", "yes_no"),
])
def test_easyvqa_question_type_known_texts(question, label):
    from catts.data.easyvqa import question_type

    assert question_type(question) == label


def test_easyvqa_question_types_and_answers(easyvqa_test):
    words = r"(red|green|blue|black|gray|teal|brown|yellow|circle|rectangle|triangle)"
    counts = Counter()
    for s in easyvqa_test:
        q, m = s.question, s.metadata
        assert s.question_type in ("color", "shape", "yes_no"), s.id
        assert s.answer_type == "text" and s.options == []
        counts[s.question_type] += 1
        # an independent labelling of the question texts
        if "color" in q:
            assert s.question_type == "color", s.id
            assert s.answer == m["color"], s.id
        elif q.startswith("what"):
            assert s.question_type == "shape", s.id
            assert s.answer == m["shape"], s.id
        else:
            assert s.question_type == "yes_no", s.id
            assert re.match(r"^(is|does) ", q), s.id
            negated = " not " in q or q.startswith("is no ")
            present = re.search(words, q).group(1) in (m["shape"], m["color"])
            assert s.answer == ("yes" if present != negated else "no"), s.id
    assert all(counts[k] > 1000 for k in ("color", "shape", "yes_no")), counts


def test_easyvqa_known_samples(easyvqa_test):
    # some specific question texts and their labels as they appear in the data
    seen = {}
    for s in easyvqa_test:
        seen.setdefault(s.question, s.question_type)
    assert seen["what color is the shape?"] == "color"
    assert seen["what shape is present?"] == "shape"
    assert seen["what is the color of the triangle?"] == "color"
    assert seen["what is the blue shape?"] == "shape"
    assert seen["is there not a circle?"] == "yes_no"
    assert seen["does the image contain a teal shape?"] == "yes_no"


# ---------------------------------------------------------------- shapes


def test_shapes_deterministic(shapes_test):
    from catts.data.shapes import load_shapes

    again = load_embedded("shapes", "test")
    assert [s.id for s in again] == [s.id for s in shapes_test]
    fresh = load_shapes.__wrapped__("test")
    assert fresh is not load_shapes("test")
    assert_same_samples(list(fresh), list(shapes_test))


def test_shapes_split_sizes_and_ids(shapes_test):
    from catts.data.shapes import QUESTIONS_PER_SCENE, SCENES

    assert len(shapes_test) == SCENES["test"] * QUESTIONS_PER_SCENE == 1000
    ids = [s.id for s in shapes_test]
    assert len(set(ids)) == len(ids)
    assert {s.metadata["scene"] for s in shapes_test} == set(range(SCENES["test"]))


def test_shapes_images_96_rgb(shapes_test):
    for s in shapes_test[::4]:
        [im] = s.load_images()
        assert im.mode == "RGB" and im.size == (96, 96)


def _name(o):
    return f"{o['color']} {o['shape']}"


def _expected(s: Sample) -> str:
    """Recompute the gold answer from metadata['objects'] alone; returns option text or answer."""
    objs = s.metadata["objects"]
    q = s.question
    if s.question_type == "count":
        if q == "How many objects are there?":
            return str(len(objs))
        m = re.fullmatch(r"How many (\w+) objects are there\?", q)
        if m:
            return str(sum(o["color"] == m.group(1) for o in objs))
        m = re.fullmatch(r"How many (\w+)s are there\?", q)
        assert m, q
        return str(sum(o["shape"] == m.group(1) for o in objs))
    if s.question_type == "color":
        m = re.fullmatch(r"What color is the (\w+)\?", q)
        targets = [o for o in objs if o["shape"] == m.group(1)]
        assert len(targets) == 1, s.id
        return targets[0]["color"]
    if s.question_type == "shape":
        m = re.fullmatch(r"What shape is the (\w+) object\?", q)
        targets = [o for o in objs if o["color"] == m.group(1)]
        assert len(targets) == 1, s.id
        return targets[0]["shape"]
    if s.question_type == "relation":
        m = re.fullmatch(r"Which object is (left of|right of|above|below) the (\w+ \w+)\?", q)
        rel, ref_name = m.groups()
        refs = [o for o in objs if _name(o) == ref_name]
        assert len(refs) == 1, s.id
        ref = refs[0]
        test = {"left of": lambda o: o["row"] == ref["row"] and o["col"] < ref["col"],
                "right of": lambda o: o["row"] == ref["row"] and o["col"] > ref["col"],
                "above": lambda o: o["col"] == ref["col"] and o["row"] < ref["row"],
                "below": lambda o: o["col"] == ref["col"] and o["row"] > ref["row"]}[rel]
        hits = [o for o in objs if o is not ref and test(o)]
        assert len(hits) == 1, s.id
        return _name(hits[0])
    if s.question_type == "exists":
        m = re.fullmatch(r"Is there a (\w+) (\w+)\?", q)
        color, shape = m.groups()
        return "yes" if any(o["color"] == color and o["shape"] == shape for o in objs) else "no"
    raise AssertionError(s.question_type)


def test_shapes_answers_match_objects(shapes_test):
    from catts.data.shapes import COLORS, SHAPES

    answer_types = {"count": "number", "color": "choice", "shape": "choice", "relation": "choice",
                    "exists": "text"}
    for s in shapes_test:
        objs = s.metadata["objects"]
        assert 1 <= len(objs) <= 4
        assert len({(o["row"], o["col"]) for o in objs}) == len(objs)
        assert all(o["shape"] in SHAPES and o["color"] in COLORS for o in objs)
        assert s.answer_type == answer_types[s.question_type], s.id
        want = _expected(s)
        if s.answer_type == "choice":
            assert len(set(s.options)) == len(s.options) >= 3, s.id
            assert s.options[s.option_letters.index(s.answer)] == want, s.id
        else:
            assert s.options == []
            assert s.answer == want, s.id


def test_shapes_exists_is_not_bag_of_features(shapes_test):
    # "no" answers where the colour is present and the shape is present, just not together
    tricky = 0
    for s in shapes_test:
        if s.question_type == "exists" and s.answer == "no":
            color, shape = re.fullmatch(r"Is there a (\w+) (\w+)\?", s.question).groups()
            objs = s.metadata["objects"]
            tricky += any(o["color"] == color for o in objs) and any(o["shape"] == shape for o in objs)
    assert tricky >= 30


def test_shapes_question_types_present(shapes_test):
    from catts.data.shapes import QUESTION_TYPES

    counts = Counter(s.question_type for s in shapes_test)
    assert set(counts) == set(QUESTION_TYPES)
    assert all(counts[k] >= 100 for k in QUESTION_TYPES), counts
    # choice answers are spread over the letters, not always the first
    letters = Counter(s.answer for s in shapes_test if s.answer_type == "choice")
    assert len(letters) >= 3 and max(letters.values()) < 0.5 * sum(letters.values())


def test_shapes_pixels_match_objects(shapes_test):
    """Each grid cell holds exactly the metadata's object, in its colour (objects stay in their cell)."""
    from catts.data.shapes import COLORS, GRID, SIZE

    cell = SIZE // GRID
    palette = np.array(list(COLORS.values()), int)
    names = list(COLORS)
    seen = set()
    for s in shapes_test:
        if s.metadata["scene"] in seen:
            continue
        seen.add(s.metadata["scene"])
        a = np.asarray(s.load_images()[0]).astype(int)
        background = np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), axis=0)
        by_cell = {(o["row"], o["col"]): o for o in s.metadata["objects"]}
        for r in range(GRID):
            for c in range(GRID):
                block = a[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].reshape(-1, 3)
                fg = block[np.abs(block - background).sum(-1) > 120]
                if (r, c) not in by_cell:
                    assert len(fg) == 0, (s.id, r, c)
                    continue
                assert len(fg) > 50, (s.id, r, c)
                nearest = np.argmin(((fg[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
                top = names[Counter(nearest.tolist()).most_common(1)[0][0]]
                assert top == by_cell[(r, c)]["color"], (s.id, r, c)


def test_shapes_identical_across_processes():
    """Python salts str hashes per process: the split must not depend on set iteration order."""
    import hashlib
    import os
    import subprocess
    import sys

    code = ("import hashlib, json; from catts.data.shapes import load_shapes; "
            "print(hashlib.sha256(json.dumps([(s.id, s.question, s.options, s.answer) for s in "
            "load_shapes('test')]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3")}
    assert len(digests) == 1
    assert hashlib.sha256(b"").hexdigest() not in digests
