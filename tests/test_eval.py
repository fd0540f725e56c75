"""`catts eval` end to end on the real tiny model: records, summary, resume, bad input, accuracy bars."""

import json

import pytest

from catts.data import Sample
from catts.jobs.eval import evaluate
from catts.jobs.progress import Progress
from catts.jobs.rundir import RunDir


class Seen(Progress):
    def __init__(self):
        self.phases, self.steps = [], 0

    def phase(self, name, total=None, done=0):
        self.phases.append((name, total, done))

    def advance(self, k=1):
        self.steps += k


def test_eval_records_and_summary(tiny_backend, shapes_test, tmp_path):
    samples = list(shapes_test[:24])
    summary = evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in samples]
    r = records[0]
    for key in ("gold", "options", "answer_type", "prediction", "extraction", "n_boxes", "answer_span", "correct",
                "confidence", "num_tokens", "seconds", "text"):
        assert key in r
    assert set(r["confidence"]) == {"mean", "tail", "bottom10", "lowest_window", "answer_prob", "trace_prob",
                                    "sequence_prob"}
    assert r["confidence"]["sequence_prob"] <= r["confidence"]["trace_prob"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["n"] == 24 and saved["versions"]["torch"] and saved["config"]["model"] == "tiny"
    assert saved["config"]["dtype"] == "float32" and saved["config"]["max_pixels"] == tiny_backend.max_pixels
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 24)
    assert set(summary["per_question_type"]) <= {"count", "color", "shape", "relation", "exists"}
    cal = summary["calibration"]["answer_prob"]
    assert set(cal) == {"all", "parsed"} and {"ece", "brier", "auroc", "aurc", "smooth_ece"} <= set(cal["all"])
    lo, hi = summary["ci95"]["accuracy"]
    assert lo <= summary["accuracy"] <= hi


def test_resume_after_kill_does_not_redo_samples(tiny_backend, shapes_test, tmp_path):
    samples = list(shapes_test[:16])
    evaluate(tiny_backend, samples[:10], tmp_path, max_new_tokens=64)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    # a kill mid-write: 6 whole records and half of the 7th
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:6]) + "\n" + lines[6][: len(lines[6]) // 2])
    seen = Seen()
    evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64, progress=seen)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in samples[:6]] + [s.id for s in samples[6:]]
    assert records[:6] == [json.loads(x) for x in lines[:6]]
    assert seen.phases[0][1:] == (16, 6) and seen.steps == 10  # six were already done, ten asked


def test_resume_with_smaller_limit_reports_only_its_samples(tiny_backend, shapes_test, tmp_path):
    evaluate(tiny_backend, list(shapes_test[:8]), tmp_path, max_new_tokens=64)
    summary = evaluate(tiny_backend, list(shapes_test[:3]), tmp_path, max_new_tokens=64)
    assert summary["n"] == 3 and summary["n_input_rows"] == 3


def test_resume_refuses_other_config(tiny_backend, shapes_test, tmp_path):
    evaluate(tiny_backend, list(shapes_test[:2]), tmp_path, max_new_tokens=64)
    ident = tiny_backend.identity
    with pytest.raises(ValueError, match="different config"):
        RunDir(tmp_path, {"task": "eval", **ident, "model": "other", "max_new_tokens": 64})
    with pytest.raises(ValueError, match="dtype"):  # a resume in another dtype would mix answers
        RunDir(tmp_path, {"task": "eval", **ident, "dtype": "bfloat16", "max_new_tokens": 64})
    fresh = RunDir(tmp_path, {"task": "eval", **ident, "model": "other", "max_new_tokens": 64}, overwrite=True)
    assert fresh.records() == [] and not (tmp_path / "summary.json").exists()


def test_bad_image_and_load_errors_are_recorded_and_run_goes_on(tiny_backend, shapes_test, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = Sample(id="bad-1", images=[str(broken)], question="How many objects are there?", answer="2",
                 answer_type="number")
    samples = [shapes_test[0], bad, shapes_test[1], shapes_test[0]]  # the last one repeats an id
    load_errors = [{"source": "x.jsonl", "line": 7, "id": None, "error": "x.jsonl:7: not JSON"}]
    summary = evaluate(tiny_backend, samples, tmp_path / "run", max_new_tokens=64, load_errors=load_errors,
                       config={"data": "x.jsonl"})
    assert summary["n"] == 2 and summary["n_errors"] == 3 and summary["n_input_rows"] == 5
    by_stage = {e["stage"]: e for e in summary["errors"]}
    assert set(by_stage) == {"image", "load"} and len(summary["errors"]) == 3
    assert by_stage["image"]["id"] == "bad-1" and "bad-1" in by_stage["image"]["error"]
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 5 and sum("error" in r for r in records) == 3


def test_empty_answer_and_garbage_output_never_guessed(tiny_backend, shapes_test, tmp_path):
    """A budget too small to reach the box: every answer is unparsed, counted wrong, and says why."""
    summary = evaluate(tiny_backend, list(shapes_test[:4]), tmp_path, max_new_tokens=2)
    assert summary["unparsed_rate"] == 1.0 and summary["accuracy"] == 0.0
    assert summary["accuracy_parsed"] is None or summary["accuracy_parsed"] != summary["accuracy_parsed"]
    saved = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN became null
    assert saved["accuracy_parsed"] is None
    rec = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert rec["prediction"] is None and rec["unparsed_reason"] and rec["confidence"]["answer_prob"] is None


@pytest.mark.parametrize("data,bar", [("easyvqa", 0.90), ("shapes", 0.85)])
def test_accuracy_bar_on_test_subset(data, bar, tiny_backend, shapes_test, easyvqa_test, tmp_path):
    """The shipped tiny model meets the issue's bars on 300 test questions (full splits: docs/models.md)."""
    pool = easyvqa_test if data == "easyvqa" else shapes_test
    samples = pool[:: len(pool) // 300][:300]
    summary = evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64)
    assert summary["n"] == 300 and summary["accuracy"] >= bar, summary
    assert summary["unparsed_rate"] < 0.05  # 1.3% on the whole shapes test split: boxed texts that are no option
