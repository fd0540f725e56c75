"""The command line: version, help, paths and a small eval, through typer's test runner."""

import json

from typer.testing import CliRunner

import catts
from catts.cli import app

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"catts {catts.__version__}"
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("eval", "probe", "data", "tiny"):
        assert cmd in r.output
    for sub in (["eval", "--help"], ["probe", "--help"], ["data", "export", "--help"], ["tiny", "train", "--help"]):
        assert runner.invoke(app, sub).exit_code == 0


def test_tiny_path():
    r = runner.invoke(app, ["tiny", "path", "tiny-expert"])
    assert r.exit_code == 0 and r.output.strip().endswith("tiny-expert")
    assert runner.invoke(app, ["tiny", "path", "nope"]).exit_code == 2


def test_eval_command(tmp_path):
    r = runner.invoke(app, ["eval", "--data", "shapes:test", "--limit", "8", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 8 and 0 <= summary["accuracy"] <= 1 and "unparsed_rate" in summary


def test_eval_bad_inputs(tmp_path):
    r = runner.invoke(app, ["eval", "--model", str(tmp_path / "missing"), "--data", "shapes:test", "--limit", "2"])
    assert r.exit_code == 2 and "never downloads" in r.output
    r = runner.invoke(app, ["eval", "--data", "nosuch:test", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no embedded dataset" in r.output
