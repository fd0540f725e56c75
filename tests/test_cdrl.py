"""CDRL training: the TRL rollout function (C and C' from the live policy), the config parsing and a CPU smoke run."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

import torch

CONFIG = Path(__file__).resolve().parents[1] / "catts" / "train" / "configs" / "cdrl_tiny.yaml"


@pytest.fixture
def one_thread():
    """The tiny model on a shared CPU: one torch thread is ~50x faster than two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cli_parses_yaml_and_overrides_without_training():
    from typer.testing import CliRunner

    from catts.cli import app
    from catts.train.cdrl import parse_cdrl_args

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", str(CONFIG), "--learning_rate", "1e-5", "--c_prime", "paired"])
    assert grpo_cfg.learning_rate == 1e-5 and grpo_cfg.num_generations == 4 and grpo_cfg.max_completion_length == 48
    assert grpo_cfg.remove_unused_columns is False and grpo_cfg.report_to == []
    assert cdrl_cfg.c_prime == "paired" and cdrl_cfg.level == [856] and cdrl_cfg.noise == "diffusion"
    with pytest.raises(ValueError, match="not used"):      # an unknown flag: TRL's parser refuses it
        parse_cdrl_args(["--config", str(CONFIG), "--no_such_option", "1"])
    res = CliRunner().invoke(app, ["train", "cdrl", "--config", str(CONFIG), "--learning_rate", "2e-5",
                                   "--perception_beta", "0.3", "--dry_run"])
    assert res.exit_code == 0, res.output
    parsed = json.loads(res.stdout[res.stdout.index("{"):])
    assert parsed["grpo"]["learning_rate"] == 2e-5 and parsed["cdrl"]["perception_beta"] == 0.3
    assert parsed["cdrl"]["dry_run"] is True and parsed["grpo"]["num_generations"] == 4


def _spy(trainer, calls):
    """Wrap every reward function of ``trainer`` to record its columns and, at call time (the policy as it was
    during the rollout), C and C' recomputed from the live model by teacher forcing the first completion."""
    from catts.models.backend import Prompt
    from catts.models.hf import TransformersBackend
    from catts.train.rewards import completion_confidence
    from catts.train.rollout import split_prompt

    def wrap(func):
        def spy(prompts, completions, completion_ids, **kw):
            record = {"name": func.__name__, "keys": set(kw), "confidence": list(kw.get("confidence") or []),
                      "noisy_confidence": list(kw.get("noisy_confidence") or [])}
            if func.__name__ == "calibration_reward":
                model = trainer.accelerator.unwrap_model(trainer.model)
                was = model.training
                model.eval()
                backend = TransformersBackend.from_model(model, trainer.processing_class, max_pixels=None)
                images, text = split_prompt(prompts[0])
                ids = [list(completion_ids[0])]
                with torch.no_grad():
                    clean = backend.score([Prompt(images=images, text=text)], ids, add_end=False)[0]
                    noisy = backend.score([Prompt(images=[kw["noisy_image"][0]], text=text)], ids, add_end=False)[0]
                model.train(was)
                record["recomputed"] = (completion_confidence(clean), completion_confidence(noisy))
                record["step"] = trainer.state.global_step
            calls.append(record)
            return func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kw)

        spy.__name__ = func.__name__
        return spy

    trainer.reward_funcs = [wrap(f) for f in trainer.reward_funcs]


def test_cdrl_smoke_trains_with_confidences_from_the_live_model(tmp_path, one_thread):
    from catts.train.cdrl import parse_cdrl_args, train_cdrl

    out_dir = tmp_path / "run"
    cdrl_cfg, grpo_cfg = parse_cdrl_args([
        "--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--output_dir", str(out_dir), "--learning_rate", "1e-3"])
    calls: list[dict] = []
    seen = {}

    def hook(trainer):
        seen["trainer"] = trainer
        _spy(trainer, calls)

    out = train_cdrl(cdrl_cfg, grpo_cfg, trainer_hook=hook)
    trainer = seen["trainer"]
    names = ["format_reward", "output_reward", "perception_reward", "calibration_reward"]
    assert [c["name"] for c in calls] == names * 2          # 2 steps, every reward once per step
    for c in calls:
        assert {"confidence", "noisy_confidence", "answer", "pair_id", "noisy_image"} <= c["keys"]
        assert len(c["confidence"]) == 8 and all(math.isfinite(x) for x in c["confidence"] + c["noisy_confidence"])
    # C and C' the rewards received are the live policy's: recomputed at reward time by teacher forcing the first
    # completion on the original and on the noisy image
    for c in (c for c in calls if "recomputed" in c):
        assert c["confidence"][0] == pytest.approx(c["recomputed"][0], abs=1e-4)
        assert c["noisy_confidence"][0] == pytest.approx(c["recomputed"][1], abs=1e-4)
        assert c["confidence"][0] != pytest.approx(c["noisy_confidence"][0], abs=1e-4)   # the noisy image matters
    # the rollout's record matches what the rewards got
    history = trainer.cdrl_rollout.history
    assert len(history) == 16 and [h["confidence"] for h in history[:8]] == calls[0]["confidence"]
    # every reward component and C, C', C - C', accuracy are logged at each step
    steps = [h for h in trainer.state.log_history if "reward" in h]
    assert len(steps) == 2
    for logged in steps:
        for key in [f"rewards/{n}/mean" for n in names] + ["cdrl/confidence", "cdrl/noisy_confidence",
                                                           "cdrl/confidence_gap", "cdrl/accuracy", "cdrl/unparsed"]:
            assert key in logged, key
        assert logged["cdrl/confidence_gap"] == pytest.approx(
            logged["cdrl/confidence"] - logged["cdrl/noisy_confidence"], abs=1e-4)
    # output written
    assert out == out_dir and (out / "model.safetensors").exists() and (out / "trainer_state.json").exists()
    assert len((out / "rollouts.jsonl").read_text().splitlines()) == 16


def test_paired_rollouts_on_the_noisy_image(one_thread):
    """``c_prime="paired"``: C' of G rollouts sampled on the noisy image (no training step)."""
    from trl.data_utils import prepare_multimodal_messages

    from catts.models.backend import Prompt, SamplingParams
    from catts.train.cdrl import build_dataset, build_trainer, parse_cdrl_args
    from catts.train.rewards import completion_confidence

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", str(CONFIG), "--data", "shapes:test", "--limit", "2",
                                          "--c_prime", "paired", "--output_dir", "/tmp/unused-cdrl"])
    ds = build_dataset(cdrl_cfg)
    trainer = build_trainer(cdrl_cfg, grpo_cfg, dataset=ds)
    row = ds[1]
    prompt = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    out = trainer.cdrl_rollout([prompt] * 4, trainer)
    assert set(out) == {"prompt_ids", "completion_ids", "logprobs", "confidence", "noisy_confidence"}
    assert all(len(v) == 4 for v in out.values())
    assert all(len(c) == len(lp) for c, lp in zip(out["completion_ids"], out["logprobs"]))
    # the paired rollouts are the backend's samples on the noisy image, seeded as the clean ones
    backend = trainer.cdrl_rollout.backend(trainer)
    text = row["prompt"][0]["content"][1]["text"]
    params = SamplingParams(n=4, temperature=grpo_cfg.temperature, max_new_tokens=grpo_cfg.max_completion_length,
                            seed=grpo_cfg.seed)
    backend.model.eval()
    paired = backend.generate([Prompt(images=[row["noisy_image"]], text=text, key=row["pair_id"])], params)[0]
    assert out["noisy_confidence"] == pytest.approx([completion_confidence(t) for t in paired], abs=1e-4)
    history = trainer.cdrl_rollout.history
    assert [h["noisy_text"] for h in history] == [t.text for t in paired]
