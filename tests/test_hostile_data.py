"""The hostile corpus (tests/hostile.py) through load_data, Sample.load_images and fit_image, plus
the image rules of catts.data.image: no row lost, no exception escapes, bombs never decoded."""

from __future__ import annotations

import io
import json
import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hostile import black_1bit_png, build_hostile_corpus, jpeg, png
from PIL import Image

from catts.data import DataError, Sample, fit_image, load_data, open_image, to_rgb, write_jsonl, write_tsv
from catts.data.image import target_size

FORMS = ("jsonl", "tsv")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_hostile_corpus(tmp_path_factory.mktemp("hostile"))


def loaded(expect: dict) -> tuple[list[Sample], list[dict]]:
    errors: list[dict] = []
    return load_data(expect["path"], errors), errors


def assert_pixels(image: Image.Image, want: dict) -> None:
    a = np.asarray(to_rgb(image)).astype(int)
    assert list(image.size) == want["size"]
    assert np.abs(a - np.array(want["rgb"])).max() <= want["tol"], (a.min((0, 1)), a.max((0, 1)), want)

# ---------------------------------------------------------------- the corpus


def test_corpus_is_consistent(corpus):
    for form in FORMS:
        e = corpus[form]
        groups = [set(e["ok"]), set(e["use_errors"]), {(x["line"], x["id"]) for x in e["load_errors"]}]
        assert e["rows"] == sum(len(g) for g in groups)
        assert not groups[0] & groups[1]
        assert len(e["ok"]) >= 8 and len(e["use_errors"]) >= 3 and len(e["load_errors"]) >= 8
    json.dumps(corpus)  # the script writes it as expected.json


@pytest.mark.parametrize("form", FORMS)
def test_every_row_is_a_sample_or_an_error_entry(corpus, form):
    e = corpus[form]
    samples, errors = loaded(e)
    assert len(samples) + len(errors) == e["rows"]
    assert sorted(s.id for s in samples) == sorted([*e["ok"], *e["use_errors"]])
    assert [(x["line"], x["id"]) for x in errors] == [(x["line"], x["id"]) for x in e["load_errors"]]
    for got, want in zip(errors, e["load_errors"]):
        assert set(got) == {"source", "line", "id", "error"} and got["source"] == e["path"]
        assert got["error"].startswith(f"{e['path']}:{want['line']}"), got
        assert want["match"] in got["error"], got
        if want["id"] is not None:
            assert repr(want["id"]) in got["error"]
    assert json.loads(json.dumps(errors)) == errors


@pytest.mark.parametrize("form", FORMS)
def test_good_rows_decode_to_the_right_pixels(corpus, form):
    e = corpus[form]
    samples = {s.id: s for s in loaded(e)[0]}
    for sid, want in e["ok"].items():
        [image] = samples[sid].load_images()
        assert_pixels(image, want)
        assert_pixels(fit_image(image, None), want)
        small = fit_image(image, 20)
        assert small.mode == "RGB" and small.width * small.height <= 20


@pytest.mark.parametrize("form", FORMS)
def test_bad_images_fail_at_use_naming_the_sample(corpus, form):
    e = corpus[form]
    samples = {s.id: s for s in loaded(e)[0]}
    for sid, match in e["use_errors"].items():
        t0 = time.perf_counter()
        with pytest.raises(DataError, match=re.escape(f"sample {sid!r}") + ".*" + re.escape(match)):
            samples[sid].load_images()
        assert time.perf_counter() - t0 < 1.0, sid  # the bomb is refused from its header, not decoded


@pytest.mark.parametrize("form", FORMS)
def test_without_an_errors_list_the_first_malformed_row_raises(corpus, form):
    e = corpus[form]
    first = e["load_errors"][0]
    with pytest.raises(DataError, match=re.escape(f"{e['path']}:{first['line']}")):
        load_data(e["path"])


def test_script_writes_corpus_and_expectations(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("hostile.py")
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True)
    assert "hostile.jsonl" in res.stdout and "hostile.tsv" in res.stdout
    want = json.loads((tmp_path / "expected.json").read_text())
    assert want == json.loads(json.dumps(build_hostile_corpus(tmp_path / "again")).replace(
        str(tmp_path / "again"), str(tmp_path)))

# ---------------------------------------------------------------- open_image


def test_open_image_maps_every_failure_to_data_error(tmp_path):
    (tmp_path / "dir.png").mkdir()
    cases = {tmp_path / "nowhere.png": "does not exist", tmp_path / "dir.png": "is not a file",
             b"": "is empty", b"GIF89a garbage": "cannot read image", png(Image.new("RGB", (9, 9)))[:30]: "cannot read"}
    for source, match in cases.items():
        with pytest.raises(DataError, match=r"^sample 'x': .*" + re.escape(match)):
            open_image(source, where="sample 'x'")
    with pytest.raises(DataError, match="zero size"):
        open_image(Image.new("RGB", (0, 5)), where="s")
    with pytest.raises(DataError, match="cannot become RGB"):
        open_image(Image.new("La", (2, 2)), where="s")


def test_warning_threshold_is_silent_and_twice_the_limit_is_a_bomb(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the global default itself is left alone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert open_image(png(Image.new("L", (40, 40))), where="s").size == (40, 40)  # 1600 > 1000
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(DataError, match="sample 'big'.*decompression bomb"):
        open_image(png(Image.new("L", (50, 50))), where="sample 'big'")  # 2500 > 2 x 1000


def test_default_limit_above_warning_threshold_loads_quietly_and_shrinks():
    data = black_1bit_png(9500)  # 90.25M pixels: above Pillow's 89.5M warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image(data, where="s")
    small = fit_image(image, 1024 * 1024)
    assert small.width * small.height <= 1024 * 1024 and small.size == (1024, 1024)
    assert np.asarray(small).max() == 0


def test_jpeg_draft_decodes_huge_jpegs_small():
    big = jpeg(Image.new("RGB", (2048, 1536), (10, 120, 200)))
    image = open_image(big, where="s", max_pixels=64 * 48)
    assert image.size == (256, 192)  # decoded at 1/8 scale, JPEG's smallest, never below the target
    assert open_image(big, where="s", max_pixels=1000 * 700).size == (1024, 768)  # 1/2: 1/4 is too small
    lazy = Image.open(io.BytesIO(big))
    out = fit_image(lazy, 64 * 48)
    assert lazy.size == (256, 192)  # drafted at 1/8 before decoding
    assert out.size == (64, 48) and np.abs(np.asarray(out).astype(int) - (10, 120, 200)).max() <= 6

# ---------------------------------------------------------------- to_rgb and fit_image


def test_to_rgb_16bit_integer_path_equals_the_float_formula():
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = np.clip(np.round(v.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(v)))[..., 0], want)
    i32 = np.array([[-70000, -129, -128, 0, 128, 129, 65535, 70000, 2**31 - 1]], dtype=np.int32)
    want = np.clip(np.round(i32.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(i32)))[..., 0], want)


def test_fit_image_shows_16bit_grey_not_white():
    grey = Image.new("I;16", (30, 20), 32768)
    assert fit_image(grey, None).getpixel((0, 0)) == (128, 128, 128)  # convert("RGB") gave white
    assert fit_image(grey, 150).getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize("size,max_pixels", [((4000, 3000), 1_000_000), ((1, 100_000), 1000),
                                             ((100_000, 3), 999), ((7, 5), 35), ((7, 5), 34), ((333, 777), 12_345)])
def test_target_size_rule(size, max_pixels):
    w, h = target_size(size, max_pixels)
    assert 1 <= w <= size[0] and 1 <= h <= size[1] and w * h <= max_pixels
    if size[0] * size[1] <= max_pixels:
        assert (w, h) == size
    elif min(w, h) > 10:
        assert abs(w / h - size[0] / size[1]) < 0.02 * size[0] / size[1]
    assert target_size(size, None) == size == target_size(size, 0)


def test_fit_image_returns_a_new_rgb_image():
    rgb = Image.new("RGB", (5, 5), (1, 2, 3))
    assert fit_image(rgb, None) is not rgb and fit_image(rgb, None).tobytes() == rgb.tobytes()
    assert fit_image(Image.new("RGBA", (10, 10)), None).mode == "RGB"


def test_fit_image_16bit_needs_no_float_buffer():
    a = (np.arange(3000 * 3000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(3000, 3000)
    image = Image.fromarray(a)
    tracemalloc.start()
    out = fit_image(image, 300 * 300)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.size == (300, 300)
    assert peak < 2 * 3000 * 3000  # < 2 bytes a pixel: the old float64 copy alone was 8 bytes a pixel


@pytest.mark.parametrize("mode", ["RGBA", "P", "1", "I;16", "L", "CMYK"])
def test_reduce_before_resize_matches_full_size_normalisation(mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (400, 600, 4), dtype=np.uint8), "RGBA").resize((600, 400))
    image = {"RGBA": base, "P": base.convert("RGB").convert("P", palette=Image.ADAPTIVE),
             "1": base.convert("1"), "I;16": Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257),
             "L": base.convert("L"), "CMYK": base.convert("CMYK")}[mode]
    got = np.asarray(fit_image(image, 60 * 40)).astype(int)
    want = np.asarray(to_rgb(image).resize((60, 40), Image.BICUBIC)).astype(int)
    assert got.shape == want.shape and np.abs(got - want).mean() < 3, np.abs(got - want).mean()

# ---------------------------------------------------------------- bytes images written back


def test_bytes_images_roundtrip_through_both_writers(corpus, tmp_path):
    tsv = corpus["tsv"]
    samples = [s for s in loaded(tsv)[0] if s.id in ("good-1", "gray16", "good-jpeg", "bomb")]
    assert all(isinstance(s.images[0], bytes) for s in samples)
    path = write_jsonl(samples, tmp_path / "out" / "b.jsonl")
    assert sorted(p.suffix for p in (tmp_path / "out" / "images").iterdir()) == [".jpg", ".png", ".png", ".png"]
    again = {s.id: s for s in load_data(str(path))}
    back = {s.id: s for s in load_data(str(write_tsv(samples, tmp_path / "b.tsv")))}
    for sid in ("good-1", "gray16", "good-jpeg"):
        assert_pixels(again[sid].load_images()[0], tsv["ok"][sid])
        assert back[sid].images[0] == samples[[s.id for s in samples].index(sid)].images[0]
    for form in (again, back):  # a broken image stays broken, and still fails only at use
        with pytest.raises(DataError, match="'bomb'.*decompression bomb"):
            form["bomb"].load_images()

# ---------------------------------------------------------------- load_data edges


def test_empty_sources_give_no_samples(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "empty.tsv").write_text("")
    (tmp_path / "header.tsv").write_text("index\timage\tquestion\tanswer\n")
    for name in ("empty.jsonl", "blank.jsonl", "empty.tsv", "header.tsv"):
        errors: list[dict] = []
        assert load_data(str(tmp_path / name), errors) == [] and errors == []


def test_missing_file_or_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"data file {tmp_path / 'no.tsv'} does not exist")):
        load_data(str(tmp_path / "no.tsv"), [])
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(DataError, match="is not a file"):
        load_data(str(tmp_path / "d.jsonl"), [])


def test_tsv_without_required_columns_is_one_error_for_the_file(tmp_path):
    path = tmp_path / "cols.tsv"
    path.write_text("index\tquestion\tA\tB\n" + "".join(f"{i}\tq?\tx\ty\n" for i in range(50)))
    errors: list[dict] = []
    with pytest.raises(DataError, match=r"cols\.tsv.*lacks the required column\(s\) image, answer"):
        load_data(str(path), errors)
    assert errors == []


def test_byte_order_marks_are_ignored(tmp_path):
    png_b64 = __import__("base64").b64encode(png(Image.new("RGB", (2, 2)))).decode()
    (tmp_path / "bom.tsv").write_bytes("\ufeffindex\timage\tquestion\tanswer\n".encode()
                                      + f"0\t{png_b64}\tq?\tyes\n".encode())
    Image.new("RGB", (2, 2)).save(tmp_path / "x.png")
    (tmp_path / "bom.jsonl").write_bytes('\ufeff{"id": "a", "image": "x.png", "question": "q?", "answer": "y"}\n'
                                         .encode())
    assert [s.id for s in load_data(str(tmp_path / "bom.tsv"))] == ["0"]
    assert [s.id for s in load_data(str(tmp_path / "bom.jsonl"))] == ["a"]


def test_jsonl_field_types_are_checked(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "x.png")
    base = {"id": "t", "image": "x.png", "question": "q?", "answer": "y"}
    rows = [base | {"id": "n", "answer": 12}, base | {"id": "a", "answer": None}, base | {"id": "b", "options": "ab"},
            base | {"id": "c", "image": ""}, base | {"id": "d", "metadata": [1]}, base | {"id": "e", "question": ["q"]}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "[" * 100_000 + "\n")
    errors: list[dict] = []
    [ok] = load_data(str(tmp_path / "t.jsonl"), errors)
    assert (ok.id, ok.answer) == ("n", "12")
    assert [e["id"] for e in errors] == ["a", "b", "c", "d", "e", None]
    assert "RecursionError" in errors[-1]["error"]


def test_tsv_image_reference_must_point_to_an_earlier_row(tmp_path):
    path = tmp_path / "ref.tsv"
    path.write_text("index\timage\tquestion\tanswer\n7\t3\tq?\tyes\n")
    errors: list[dict] = []
    assert load_data(str(path), errors) == []
    assert "neither base64 nor the index of an earlier row" in errors[0]["error"]
