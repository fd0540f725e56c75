"""The hostile corpus (tests/hostile.py) through `catts eval` and `catts probe` end to end, on the real tiny model.

Every bad row or image is accounted for in the run folder (a record with its error, in summary.json
too), the run finishes, nothing good is lost, no traceback; a 9500x9500 image stays within memory.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catts.cli import app
from hostile import build_hostile_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_hostile_corpus(tmp_path_factory.mktemp("hostile"))


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _check_accounted(records: list[dict], expect: dict, per_question: int) -> None:
    loaded = [r for r in records if r.get("stage") == "load"]
    assert sorted(r["line"] for r in loaded) == sorted(e["line"] for e in expect["load_errors"])
    asked = [r for r in records if r.get("stage") != "load" and r.get("split") != "map"]
    assert len(asked) == per_question * (len(expect["ok"]) + len(expect["use_errors"]))
    for r in asked:
        if r["id"] in expect["use_errors"]:
            assert r["stage"] == "image" and r["id"] in r["error"] and expect["use_errors"][r["id"]] in r["error"]
        else:
            assert r["id"] in expect["ok"] and "error" not in r and r["num_tokens"] > 0  # nothing good is lost


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_eval_accounts_for_every_row(corpus, fmt, tmp_path):
    expect = corpus[fmt]
    r = runner.invoke(app, ["eval", "--data", expect["path"], "--max-new-tokens", "8", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    records = _records(tmp_path)
    assert len(records) == expect["rows"]
    _check_accounted(records, expect, 1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_input_rows"] == expect["rows"] and summary["n"] == len(expect["ok"])
    assert len(summary["errors"]) == len(expect["use_errors"]) + len(expect["load_errors"])


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_probe_accounts_for_every_row(corpus, fmt, tmp_path):
    expect = corpus[fmt]
    r = runner.invoke(app, ["probe", "--data", expect["path"], "--degrade", "diffusion:0,999", "--degrade", "blur:3",
                            "--max-new-tokens", "8", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    records = _records(tmp_path)
    _check_accounted(records, expect, 3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [lv["n"] for lv in summary["levels"]] == [len(expect["ok"])] * 3
    assert {e["stage"] for e in summary["errors"]} == {"load", "image"}
    assert "could not be used" in (tmp_path / "summary.md").read_text()


def test_header_only_file_is_one_clear_line(tmp_path):
    data = tmp_path / "empty.tsv"
    data.write_text("index\timage\tquestion\tanswer\n")
    r = runner.invoke(app, ["probe", "--data", str(data), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "no rows" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_huge_image_is_degraded_at_model_size_with_bounded_memory(tmp_path):
    """A 9500x9500 PNG (11 KB on disk) once took 10 GB in the probe; now it is shrunk before degrading."""
    expect = build_hostile_corpus(tmp_path / "c", huge=True)["jsonl"]
    line = next(x for x in Path(expect["path"]).read_bytes().splitlines() if b'"id": "huge"' in x)
    huge = json.loads(line)
    data = Path(expect["path"]).parent / "huge.jsonl"
    data.write_text(json.dumps(huge) + "\n")
    script = (
        "import resource, sys\n"
        "from catts.cli import app\n"
        "try:\n"
        f"    app(['probe', '--data', {str(data)!r}, '--degrade', 'diffusion:999', '--map-limit', '2', "
        f"'--max-new-tokens', '4', '--out', {str(tmp_path / 'run')!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rss_mb = int(p.stdout.split("maxrss_kb")[-1]) / 1024
    assert rss_mb < 2048, rss_mb
    rec = [r for r in _records(tmp_path / "run") if r.get("split") != "map"]
    assert len(rec) == 1 and "error" not in rec[0]
