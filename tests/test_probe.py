"""`catts probe` on the real tiny model: the sweep, its records and report, resume and determinism."""

import csv
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from catts.cli import app
from catts.probe import ProbeConfig, level_metrics, run_probe

SMALL = dict(data=["shapes:test"], degrade=["none:0", "diffusion:0,999", "blur:5"], limit=12, map_limit=24,
             max_new_tokens=64)


@pytest.fixture(scope="module")
def probe_run(tiny_backend, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    return out, run_probe(tiny_backend, ProbeConfig(**SMALL), out)


def test_summary_levels_hold_every_metric(probe_run):
    out, summary = probe_run
    saved = json.loads((out / "summary.json").read_text())
    assert [(lv["kind"], lv["level"]) for lv in saved["levels"]] == [("none", 0), ("diffusion", 0), ("diffusion", 999),
                                                                      ("blur", 5)]
    for lv in saved["levels"]:
        for key in ("kind", "level", "n", "accuracy", "ece", "auroc", "brier", "unparsed_rate", "confidence"):
            assert key in lv
        assert lv["n"] == 12
        for name in ("answer_prob", "nmlp", "c_mapped", "mean", "tail", "bottom10", "lowest_window"):
            assert name in lv["confidence"]
        assert 0 <= lv["confidence"]["answer_prob"] <= 1
    assert saved["versions"]["transformers"] and saved["config"]["seed"] == 0
    assert saved["confidence_maps"]["shapes:test"]["method"] == "platt"


def test_report_files(probe_run):
    out, summary = probe_run
    rows = list(csv.DictReader((out / "levels.csv").open()))
    assert len(rows) == 4 and float(rows[0]["accuracy"]) == pytest.approx(summary["levels"][0]["accuracy"])
    for name in ("figure1_shapes_test_diffusion.png", "reliability_shapes_test_blur.png"):
        with Image.open(out / name) as im:
            assert im.width > 150 and im.height > 150
    md = (out / "summary.md").read_text()
    assert "accuracy went" in md and "| diffusion | 999 |" in md
    b = summary["bluntness"]["shapes:test"]
    assert b["accuracy_drop"] == pytest.approx(b["accuracy"][0] - b["accuracy"][1])


def test_records_match_metrics(probe_run):
    out, summary = probe_run
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 48 and len({r["key"] for r in records}) == 48
    blur = [r for r in records if r["kind"] == "blur"]
    assert level_metrics(blur)["accuracy"] == pytest.approx(summary["levels"][3]["accuracy"])


def test_resume_and_determinism(probe_run, tiny_backend, tmp_path):
    out, summary = probe_run
    seen = []
    again = run_probe(tiny_backend, ProbeConfig(**SMALL), out, progress=lambda k, total: seen.append((k, total)))
    assert seen[0] == (48, 48) and len(seen) == 1  # nothing redone
    assert json.dumps(again["levels"]) == json.dumps(summary["levels"])  # NaN-safe comparison
    fresh = run_probe(tiny_backend, ProbeConfig(**SMALL), tmp_path / "fresh", batch=5)  # other batching
    assert [lv["accuracy"] for lv in fresh["levels"]] == [lv["accuracy"] for lv in summary["levels"]]
    assert fresh["levels"][2]["confidence"]["answer_prob"] == pytest.approx(
        summary["levels"][2]["confidence"]["answer_prob"], abs=1e-5)
    with pytest.raises(ValueError, match="different config"):
        run_probe(tiny_backend, ProbeConfig(**{**SMALL, "seed": 1}), out)


def test_cli_probe_and_bad_spec(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["probe", "--degrade", "blur:9", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "blur" in bad.output
    ok = runner.invoke(app, ["probe", "--data", "easyvqa:test", "--degrade", "diffusion:0,999", "--limit", "6",
                             "--map-limit", "12", "--out", str(tmp_path / "p")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["levels"][0]["n"] == 6


def test_key_region_with_the_models_own_attention(tiny_backend, shapes_test, tmp_path):
    import numpy as np

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
