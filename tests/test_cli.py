"""The command line: version, help, paths, a small eval, and one clear line for every bad argument.

Bad arguments must be refused before a model is loaded and before a run folder is created.
"""

import json

import pytest
from typer.testing import CliRunner

import catts
from catts.cli import app

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"catts {catts.__version__}"
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("eval", "probe", "regrade", "data", "tiny"):
        assert cmd in r.output
    for sub in (["eval", "--help"], ["probe", "--help"], ["data", "export", "--help"], ["tiny", "train", "--help"],
                ["regrade", "--help"]):
        assert runner.invoke(app, sub).exit_code == 0


def test_tiny_path():
    r = runner.invoke(app, ["tiny", "path", "tiny-expert"])
    assert r.exit_code == 0 and r.output.strip().endswith("tiny-expert")
    assert runner.invoke(app, ["tiny", "path", "nope"]).exit_code == 2


def test_eval_command_logs_progress_off_a_terminal(tmp_path):
    r = runner.invoke(app, ["eval", "--data", "shapes:test", "--limit", "8", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 8 and 0 <= summary["accuracy"] <= 1 and "unparsed_rate" in summary
    assert "eval tiny: started" in r.output and "eval tiny: finished" in r.output  # stderr is no terminal here


BAD = [
    (["eval", "--data", "nosuch:test"], "expected NAME:SPLIT"),
    (["probe", "--data", "shapes:tset"], "expected NAME:SPLIT"),
    (["probe", "--data", "missing.jsonl"], "no such file"),
    (["eval", "--data", "missing.tsv"], "no such file"),
    (["probe", "--device", "gpu"], "--device 'gpu'"),
    (["eval", "--device", "cuda:3"], "--device cuda:3"),
    (["probe", "--degrade", "blur:9"], "blur"),
    (["probe", "--degrade", "key_region:999", "--saliency", "/no/such/clip"], "--saliency"),
    (["eval", "--model", "/no/such/model"], "never downloads"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_one_line_no_folder(args, message, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()  # nothing created: the corrected command starts cleanly


def test_bad_choice_is_refused_by_the_parser(tmp_path):
    r = runner.invoke(app, ["eval", "--dtype", "float64", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "float64" in r.output


def test_reused_out_refused_then_overwritten(tmp_path):
    args = ["probe", "--data", "shapes:test", "--degrade", "diffusion:0,999", "--limit", "2", "--map-limit", "2",
            "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, [*args, "--seed", "1"])
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*args, "--seed", "1", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1


def test_probe_prints_the_markdown_as_written(tmp_path):
    r = runner.invoke(app, ["probe", "--data", "easyvqa:test", "--degrade", "diffusion:0,999", "--limit", "6",
                            "--map-limit", "12", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "summary.md").read_text() in r.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["levels"][0]["n"] == 6


def test_regrade_command(tmp_path):
    r = runner.invoke(app, ["regrade", str(tmp_path)])
    assert r.exit_code == 2 and "no catts run" in r.output


def test_missing_processor_package_is_one_line(monkeypatch, tmp_path):
    """torchvision is installed here, so its absence is simulated (the only mock in this file): transformers
    raises a many-line ImportError; the command prints one line that names the package."""
    import transformers

    def no_torchvision(*args, **kwargs):
        raise ImportError("\nQwen2VLVideoProcessor requires the Torchvision library but it was not found in your "
                          "environment.\nCheck out the instructions on the installation page.\n")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_torchvision)
    r = runner.invoke(app, ["eval", "--data", "shapes:test", "--limit", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "pip install torchvision" in lines[0]
