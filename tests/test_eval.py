"""`catts eval` end to end on the real tiny model: records, summary, resume, bad input, accuracy bars."""

import json

import pytest

from catts.data import Sample
from catts.eval import evaluate
from catts.runs import RunDir


def test_eval_records_and_summary(tiny_backend, shapes_test, tmp_path):
    samples = list(shapes_test[:24])
    summary = evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in samples]
    r = records[0]
    for key in ("gold", "prediction", "extraction", "correct", "confidence", "num_tokens", "seconds", "text"):
        assert key in r
    assert set(r["confidence"]) == {"mean", "tail", "bottom10", "lowest_window"}
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["n"] == 24 and saved["versions"]["torch"] and saved["config"]["model"] == "tiny"
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 24)
    assert set(summary["per_question_type"]) <= {"count", "color", "shape", "relation", "exists"}


def test_resume_after_kill_does_not_redo_samples(tiny_backend, shapes_test, tmp_path):
    samples = list(shapes_test[:16])
    evaluate(tiny_backend, samples[:10], tmp_path, max_new_tokens=64)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    # a kill mid-write: 6 whole records and half of the 7th
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:6]) + "\n" + lines[6][: len(lines[6]) // 2])
    seen = []
    evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64, progress=seen.append)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in samples[:6]] + [s.id for s in samples[6:]]
    assert records[:6] == [json.loads(x) for x in lines[:6]]
    assert seen[0] == 6  # six were already done


def test_resume_refuses_other_config(tiny_backend, shapes_test, tmp_path):
    evaluate(tiny_backend, list(shapes_test[:2]), tmp_path, max_new_tokens=64)
    with pytest.raises(ValueError, match="different config"):
        RunDir(tmp_path, {"task": "eval", "model": "other", "max_new_tokens": 64})


def test_bad_image_is_recorded_and_run_goes_on(tiny_backend, shapes_test, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    bad = Sample(id="bad-1", images=[str(broken)], question="How many objects are there?", answer="2",
                 answer_type="number")
    samples = [shapes_test[0], bad, shapes_test[1]]
    summary = evaluate(tiny_backend, samples, tmp_path / "run", max_new_tokens=64)
    assert summary["n"] == 2 and summary["n_errors"] == 1
    assert "bad-1" in summary["errors"][0]["id"] and "cannot read image" in summary["errors"][0]["error"]


@pytest.mark.parametrize("data,bar", [("easyvqa", 0.90), ("shapes", 0.85)])
def test_accuracy_bar_on_test_subset(data, bar, tiny_backend, shapes_test, easyvqa_test, tmp_path):
    """The shipped tiny model meets the issue's bars on 300 test questions (full splits: docs/models.md)."""
    pool = easyvqa_test if data == "easyvqa" else shapes_test
    samples = pool[:: len(pool) // 300][:300]
    summary = evaluate(tiny_backend, samples, tmp_path, max_new_tokens=64)
    assert summary["n"] == 300 and summary["accuracy"] >= bar, summary
    assert summary["unparsed_rate"] < 0.05  # 1.3% on the whole shapes test split: boxed texts that are no option
