"""`catts probe` on the real tiny model: the sweep, its records and report, resume, regrade and determinism."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from catts.jobs.probe import ProbeConfig, run_probe
from catts.jobs.regrade import regrade
from catts.jobs.summary import summarize

SMALL = dict(data=["shapes:test"], degrade=["none:0", "diffusion:0,999", "blur:5"], limit=12, map_limit=24,
             max_new_tokens=64)


@pytest.fixture(scope="module")
def probe_run(tiny_backend, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    return out, run_probe(tiny_backend, ProbeConfig(**SMALL), out)


def test_summary_levels_hold_every_metric_over_both_scopes(probe_run):
    out, summary = probe_run
    saved = json.loads((out / "summary.json").read_text())  # strict JSON: json.loads would accept NaN, so check
    assert "NaN" not in (out / "summary.json").read_text()
    assert [(lv["kind"], lv["level"]) for lv in saved["levels"]] == [("none", 0), ("diffusion", 0), ("diffusion", 999),
                                                                      ("blur", 5)]
    assert saved["n_bins"] == 15
    for lv in saved["levels"]:
        assert lv["n"] == 12
        for key in ("accuracy", "accuracy_parsed", "unparsed_rate", "confidence", "calibration", "ranking"):
            assert key in lv
        for name in ("answer_prob", "trace_prob", "c_mapped"):
            for scope in ("all", "parsed"):
                metrics = set(lv["calibration"][name][scope])
                assert {"ece", "mce", "brier", "auroc", "aurc", "smooth_ece", "n"} <= metrics
        assert lv["ranking"]["mean"]["all"]["n"] == 12
        assert 0 <= lv["confidence"]["answer_prob"]["all"] <= lv["confidence"]["answer_prob"]["parsed"] or \
            lv["confidence"]["answer_prob"]["parsed"] is None
    assert "ci95" in saved["levels"][1] and "ci95" in saved["levels"][2]
    assert saved["versions"]["transformers"] and saved["config"]["seed"] == 0 and saved["config"]["dtype"]
    assert saved["confidence_maps"]["shapes:test"]["method"] == "platt"
    f = saved["finding"]["shapes:test"]
    assert f["uses"] == "parsed" and set(f) >= {"parsed", "all", "C", "c_mapped", "unparsed_rate"}
    p = f["parsed"]
    assert p["accuracy_drop"] == pytest.approx(p["accuracy"][0] - p["accuracy"][1])


def test_map_records_are_kept_apart(probe_run):
    out, summary = probe_run
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    maps = [r for r in records if r.get("split") == "map"]
    assert len(maps) == 24 and all(r["data"] == "shapes:test" and r["kind"] == "none" for r in maps)
    probed = [r for r in records if r.get("split") != "map"]
    assert len(probed) == 48 and len({r["key"] for r in probed}) == 48
    blur = [r for r in probed if r["kind"] == "blur"]
    assert summarize(blur)["accuracy"] == pytest.approx(summary["levels"][3]["accuracy"])


def test_report_files(probe_run):
    out, summary = probe_run
    rows = list(csv.DictReader((out / "levels.csv").open()))
    assert len(rows) == 4 and float(rows[0]["accuracy"]) == pytest.approx(summary["levels"][0]["accuracy"])
    assert float(rows[2]["answer_prob_ece_parsed"]) == pytest.approx(
        summary["levels"][2]["calibration"]["answer_prob"]["parsed"]["ece"])
    for name in ("figure1_shapes_test_diffusion.png", "reliability_shapes_test_blur.png"):
        with Image.open(out / name) as im:
            assert im.width > 150 and im.height > 150
    md = (out / "summary.md").read_text()
    assert "over the answers the model gave (parsed answers)" in md and "| diffusion | 999 |" in md
    p = summary["finding"]["shapes:test"]["parsed"]
    assert p["accuracy_drop"] > 0.05 and p["drop_ratio"] < 1  # on these 12 questions: 1.0 -> 0.5, confidence up
    assert "Perceptual bluntness holds here for the answer probability" in md
    assert "15 equal-width bins" in md


def test_traces_are_stored_and_regrade_reproduces_the_run(probe_run, tmp_path):
    import shutil

    out, summary = probe_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = [json.loads(x) for x in (copy / "results.jsonl").read_text().splitlines()]
    again = regrade(copy)  # no model: from traces/ only
    after = [json.loads(x) for x in (copy / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in after] == [r["key"] for r in before]
    for a, b in zip(before, after):
        assert a["prediction"] == b["prediction"] and a["correct"] == b["correct"]
        for name, v in a["confidence"].items():
            assert b["confidence"][name] == pytest.approx(v, abs=1e-6)
    assert [lv["accuracy"] for lv in again["levels"]] == [lv["accuracy"] for lv in summary["levels"]]
    # a record whose stored extraction is stale is mended by the regrade
    stale = dict(after[30], prediction="Z", correct=not after[30]["correct"])
    (copy / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in after[:30] + [stale] + after[31:]))
    regrade(copy)
    fixed = [json.loads(x) for x in (copy / "results.jsonl").read_text().splitlines()][30]
    assert fixed["prediction"] == after[30]["prediction"] and fixed["correct"] == after[30]["correct"]


def test_resume_and_determinism(probe_run, tiny_backend, tmp_path):
    out, summary = probe_run

    class Seen:
        phases = []

        def phase(self, name, total=None, done=0):
            self.phases.append((total, done))

        def advance(self, k=1):
            raise AssertionError("nothing should be redone")

        def close(self):
            pass

    again = run_probe(tiny_backend, ProbeConfig(**SMALL), out, progress=Seen())
    assert Seen.phases[:2] == [(24, 24), (48, 48)]
    assert json.dumps(again["levels"]) == json.dumps(summary["levels"])
    fresh = run_probe(tiny_backend, ProbeConfig(**SMALL), tmp_path / "fresh", batch=5)  # other batching
    assert [lv["accuracy"] for lv in fresh["levels"]] == [lv["accuracy"] for lv in summary["levels"]]
    a = fresh["levels"][2]["confidence"]["answer_prob"]["parsed"]
    assert a == pytest.approx(summary["levels"][2]["confidence"]["answer_prob"]["parsed"], abs=1e-5)
    with pytest.raises(ValueError, match="different config"):
        run_probe(tiny_backend, ProbeConfig(**{**SMALL, "seed": 1}), out)


def test_level_where_nothing_parses(tiny_backend, tmp_path):
    """max_new_tokens=2 never reaches a box: every level is all-unparsed, and the summary still stands."""
    summary = run_probe(tiny_backend, ProbeConfig(data=["shapes:test"], degrade=["diffusion:0,999"], limit=3,
                                                  map_limit=4, max_new_tokens=2), tmp_path)
    lv = summary["levels"][0]
    assert lv["n"] == 3 and lv["unparsed_rate"] == 1.0 and lv["accuracy"] == 0.0
    assert np.isnan(lv["accuracy_parsed"])
    assert (tmp_path / "summary.md").exists() and "NaN" not in (tmp_path / "summary.json").read_text()


def test_key_region_with_the_models_own_attention(tiny_backend, shapes_test, tmp_path):
    from catts.perception.saliency import load_saliency

    sal = load_saliency("tiny")
    s = shapes_test[0]
    grid = sal(s.load_images()[0])
    assert grid.shape == (6, 6) and abs(grid.sum() - 1) < 1e-5
    # the most attended patch lies on an object of the scene (objects sit in a 3x3 grid of 2x2 patches)
    r, c = np.unravel_index(grid.argmax(), grid.shape)
    assert (r // 2, c // 2) in {(o["row"], o["col"]) for o in s.metadata["objects"]}
    summary = run_probe(tiny_backend, ProbeConfig(data=["shapes:test"], degrade=["key_region:999"], limit=4,
                                                  map_limit=8, saliency="model"), tmp_path)
    assert summary["levels"][0]["n"] == 4


def test_resume_with_a_smaller_limit_reports_only_its_questions(probe_run, tiny_backend, tmp_path):
    import shutil

    out, _ = probe_run
    shutil.copytree(out, tmp_path / "copy")
    summary = run_probe(tiny_backend, ProbeConfig(**{**SMALL, "limit": 5}), tmp_path / "copy")
    assert [lv["n"] for lv in summary["levels"]] == [5, 5, 5, 5]


def test_repeated_kinds_are_merged():
    cfg = ProbeConfig(degrade=["blur:1", "diffusion:0,999", "blur:3,1"])
    assert cfg.sweeps() == [("blur", [1, 3]), ("diffusion", [0, 999])]
