"""A killed CDRL run resumes from its last checkpoint (optimizer state included) to the weights and rollouts of an
uninterrupted run, logs a progress line per logging step, and trains data parallel in two processes (torchrun)."""

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("trl")
import torch
from safetensors.torch import load_file

CONFIG = Path(__file__).resolve().parents[1] / "catts" / "train" / "configs" / "cdrl_tiny.yaml"


class Killed(Exception):
    pass


def _args(out: Path) -> list[str]:
    return ["--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "4",
            "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out),
            # the pathwise Brier loss: a gradient at every step, even where GRPO's groups tie
            "--calibration_loss_weight", "1", "--temperature", "1.0", "--confidence_kind", "answer_prob"]


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, caplog, one_thread):
    from transformers import TrainerCallback

    from catts.train.cdrl import parse_cdrl_args, train_cdrl

    with caplog.at_level(logging.INFO, logger="catts"):
        whole = train_cdrl(*parse_cdrl_args(_args(tmp_path / "whole")))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cdrl step")]
    assert [line.split(":")[0] for line in lines] == [f"cdrl step {k}/4" for k in (1, 2, 3, 4)]
    assert all("accuracy" in line and "C - C'" in line and "s/step" in line for line in lines)

    class KillAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:   # checkpoint-2 is on disk, step 3's work is not
                raise Killed

    with pytest.raises(Killed):
        train_cdrl(*parse_cdrl_args(_args(tmp_path / "killed")), trainer_hook=lambda t: t.add_callback(KillAtStep3))
    killed = tmp_path / "killed"
    assert (killed / "checkpoint-2" / "optimizer.pt").exists() and not (killed / "model.safetensors").exists()
    assert {json.loads(x)["step"] for x in (killed / "rollouts.jsonl").read_text().splitlines()} == {0, 1, 2}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="catts"):
        resumed = train_cdrl(*parse_cdrl_args(_args(killed)))
    assert any("resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage() for r in caplog.records)
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    base = load_file(Path(__file__).resolve().parents[1] / "catts/models/tiny/weights/tiny/model.safetensors")
    assert any(not torch.equal(a[k], base[k]) for k in a)   # training moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    # every step's rollouts once, the same as the uninterrupted run's
    ra = [json.loads(x) for x in (whole / "rollouts.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (resumed / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rb] == [r["step"] for r in ra] == [s for s in range(4) for _ in range(8)]
    assert [r["text"] for r in rb] == [r["text"] for r in ra]


def test_step_line():
    from catts.train.progress import step_line

    logs = {"reward": 3.6249, "cdrl/accuracy": 0.6, "cdrl/confidence": 0.7741, "cdrl/noisy_confidence": 0.305,
            "cdrl/confidence_gap": 0.4691, "cdrl/unparsed": 0.14, "loss": 0.2}
    assert step_line(40, 300, logs, 1.4) == ("cdrl step 40/300: reward 3.62, accuracy 0.60, C 0.774, C' 0.305, "
                                            "C - C' 0.469, unparsed 0.14; 1.4 s/step, about 6 min left")
    assert step_line(1, 4, {"reward": 1.0}, None) == "cdrl step 1/4: reward 1.00"


def test_two_processes_train_with_torchrun(tmp_path):
    """Data parallel on the CPU (torchrun, gloo): the path the 8-GPU recipe takes, as far as this machine goes.
    Each process writes its own rollouts, only the main one logs the step lines and interpolates."""
    import os
    import subprocess
    import sys

    import socket

    out = tmp_path / "ddp"
    with socket.socket() as free:   # a port nothing else holds, for the processes' rendezvous
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", port, "-m", "catts.cli", "train", "cdrl",
           "--config", str(CONFIG), "--data", "shapes:test", "--limit", "8", "--max_steps", "3",
           "--per_device_train_batch_size", "4", "--logging_steps", "1", "--interpolation", "0.5",
           "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out),
           "--calibration_loss_weight", "1", "--temperature", "1.0", "--confidence_kind", "answer_prob"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [line for line in res.stderr.splitlines() if " cdrl step " in line]
    assert [s.split("cdrl step ")[1].split(":")[0] for s in steps] == ["1/3", "2/3", "3/3"]   # the main process only
    main = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    other = [json.loads(x) for x in (out / "rollouts.1.jsonl").read_text().splitlines()]
    assert [r["step"] for r in main] == [r["step"] for r in other] == [s for s in range(3) for _ in range(4)]
    assert {r["pair_id"] for r in main} != {r["pair_id"] for r in other}   # each process its own prompts
    assert (out / "checkpoint-2" / "optimizer.pt").exists() and (out / "trained" / "model.safetensors").exists()
    assert json.loads((out / "interpolation.json").read_text())["weight"] == 0.5
