"""Sharded runs without a server: ``accelerate launch`` runs one process per device, rank 0 merges."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from catts.jobs import shard
from catts.jobs.rundir import RunDir

BIN = Path(sys.executable).parent
ARGS = ["eval", "--model", "tiny", "--data", "shapes:test", "--limit", "6", "--batch-size", "2"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _catts(out: Path, processes: int = 1) -> None:
    cmd = [str(BIN / "catts"), *ARGS, "--out", str(out)]
    if processes > 1:  # accelerate's --cpu wants mpirun for many processes; --multi_gpu is torchrun (gloo here)
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_port()), "--no_python", *cmd]
    p = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def _answers(out: Path) -> list[tuple]:
    return [(r["key"], r["prediction"], r["correct"]) for r in _lines(out)]


def test_eval_sharded_matches_single_and_resumes(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    _catts(single)
    _catts(multi, processes=2)
    assert _answers(multi) == _answers(single) and len(_answers(multi)) == 6  # item order, each once
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (single, multi))
    assert s2["accuracy"] == s1["accuracy"] and s2["n"] == s1["n"] == 6 and s2["timing"]["processes"] == 2
    assert not list(multi.glob("results.rank*")) and not list((multi / "traces").glob("rank*"))
    assert set(RunDir(multi, json.loads((multi / "config.json").read_text())).traces()) == {
        k for k, _, _ in _answers(single)}

    # a killed run: rank files with some lines missing (one a partial line), no results.jsonl yet
    records = _lines(multi)
    kept = [r | {"kept": True} for r in records]
    (multi / "results.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept[0:4:2]))
    (multi / "results.rank1.jsonl").write_text(json.dumps(kept[1]) + "\n" + json.dumps(kept[3])[:40])
    (multi / "results.jsonl").unlink()
    (multi / "summary.json").unlink()
    _catts(multi, processes=2)
    after = _lines(multi)
    assert [r["key"] for r in after] == [r["key"] for r in records]  # item order, once each
    assert [bool(r.get("kept")) for r in after] == [True, True, True, False, False, False]  # only those redone
    assert _answers(multi) == _answers(single)
    assert json.loads((multi / "summary.json").read_text())["accuracy"] == s1["accuracy"]


def test_world_and_absorb(tmp_path, monkeypatch):
    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    assert shard.world() == (0, 1) and shard.session(tmp_path) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError):
        shard.world()
    run = RunDir(tmp_path, {"task": "t"})
    run.append([{"key": "a", "v": 0}])
    w = shard.RankWriter(tmp_path, 1)
    w.append([{"key": "c", "v": 1}, {"key": "b", "v": 1}, {"key": "a", "v": 1}])
    w.flush()
    assert shard.absorb(run, ["a", "b", "c"]) == 3
    assert [(r["key"], r["v"]) for r in run.records()] == [("a", 1), ("b", 1), ("c", 1)]
    assert not shard.rank_files(tmp_path)


def test_tts_sharded(tmp_path):
    out = tmp_path / "tts"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()), "--no_python",
           str(BIN / "catts"), "tts", "--data", "shapes:test", "--limit", "2", "--n", "2", "--degrade", "diffusion:0",
           "--max-new-tokens", "48", "--out", str(out)]
    p = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    keys = [r["key"] for r in _lines(out)]
    assert keys == [f"shapes:test|shapes-test-00000-{i}|diffusion|0" for i in range(2)]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_input_rows"] == 2 and s["timing"]["processes"] == 2 and (out / "summary.md").exists()
    assert not shard.rank_files(out)


def test_probe_sharded_matches_single(tmp_path):
    """The sharded probe answers map and probe questions in one pass, then rank 0 fits the maps and grades with
    them from the stored traces: records, mapped C, finding and figures as one process makes them."""
    args = ["probe", "--data", "shapes:test", "--limit", "3", "--map-limit", "4", "--degrade", "diffusion:0,999",
            "--max-new-tokens", "48"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    for out, n in ((single, 1), (multi, 2)):
        cmd = [str(BIN / "catts"), *args, "--out", str(out)]
        if n > 1:
            cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()),
                   "--no_python", *cmd]
        p = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    def rows(out):
        return sorted((r["key"], r["prediction"], r["correct"], round(r["confidence"].get("c_mapped") or -1, 9))
                      for r in _lines(out))

    assert rows(multi) == rows(single) and len(rows(single)) == 4 + 3 * 2
    assert all(r[3] >= 0 for r in rows(multi) if "|map|" not in r[0])  # graded with the map
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (single, multi))
    assert s2["finding"] == s1["finding"] and s2["timing"]["processes"] == 2
    assert (multi / "figure1_shapes_test_diffusion.png").is_file() and not shard.rank_files(multi)
