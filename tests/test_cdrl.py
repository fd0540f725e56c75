"""CDRL training: the TRL rollout function (C and C' from the live policy), the config parsing and a CPU smoke run."""

import json
import math
import re
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

import torch

CONFIG = Path(__file__).resolve().parents[1] / "catts" / "train" / "configs" / "cdrl_tiny.yaml"


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
    with pytest.raises(ValueError, match="format_rule"):
        parse_cdrl_args(["--config", str(CONFIG), "--format_rule", "loose"])
    res = CliRunner().invoke(app, ["train", "cdrl", "--config", str(CONFIG), "--learning_rate", "2e-5",
                                   "--perception_beta", "0.3", "--dry_run"])
    assert res.exit_code == 0, res.output
    parsed = json.loads(res.stdout[res.stdout.index("{"):])
    assert parsed["grpo"]["learning_rate"] == 2e-5 and parsed["cdrl"]["perception_beta"] == 0.3
    assert parsed["cdrl"]["dry_run"] is True and parsed["grpo"]["num_generations"] == 4
    assert parsed["grpo"]["disable_tqdm"] is True   # off a terminal the step lines replace TRL's bar


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


def test_completion_probability_and_brier_by_hand():
    from catts.train.pathwise import brier_loss, completion_probability

    logps = torch.tensor([[math.log(0.5), math.log(0.8), math.log(0.1)], [math.log(0.9), 0.0, -5.0]],
                         requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])   # the second completion has two tokens
    trace = completion_probability(logps, mask, "trace_prob")
    assert trace.tolist() == pytest.approx([(0.5 * 0.8 * 0.1) ** (1 / 3), 0.9 ** 0.5], abs=1e-6)
    seq = completion_probability(logps, mask, "sequence_prob")
    assert seq.tolist() == pytest.approx([0.04, 0.9], abs=1e-6)
    loss = brier_loss(seq, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((0.04 ** 2 + 0.1 ** 2) / 2, abs=1e-6)
    loss.backward()
    # d/d log p_t of (c - z)^2 / 2 = (c - z) * c for each unmasked token of a sequence probability, 0 where masked
    g = logps.grad.tolist()
    assert g[0] == pytest.approx([0.04 * 0.04] * 3, abs=1e-6)
    assert g[1] == pytest.approx([-0.1 * 0.9, -0.1 * 0.9, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="pathwise"):
        completion_probability(logps, mask, "mean")


def test_pathwise_calibration_loss_on_the_live_policy(tmp_path, one_thread):
    """Two steps with the calibration term's pathwise gradient: the loss sees the live policy's trace probability
    of the very completions the rewards scored (equal to the rollout's C at the step's start), and their
    correctness from the output reward."""
    from catts.train.cdrl import build_trainer, parse_cdrl_args, train_cdrl

    args = ["--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "2",
            "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "run"), "--temperature", "1.0",
            "--confidence_kind", "trace_prob", "--calibration_loss_weight", "1.0", "--learning_rate", "1e-3"]
    seen: dict = {}

    def hook(trainer):
        seen["trainer"] = trainer
        compute = trainer._compute_loss

        def watch(model, inputs):
            loss = compute(model, inputs)
            from catts.train.pathwise import completion_probability
            live = completion_probability(trainer._live_logps.detach(), inputs["completion_mask"], "trace_prob")
            seen.setdefault("live", []).append(live.tolist())
            seen.setdefault("correct", []).append(inputs["correct"].tolist())
            seen.setdefault("well_formed", []).append(inputs["well_formed"].tolist())
            return loss

        trainer._compute_loss = watch

    train_cdrl(*parse_cdrl_args(args), trainer_hook=hook)
    trainer = seen["trainer"]
    history = trainer.cdrl_rollout.history
    first = [h["confidence"] for h in history[:8]]
    # one generation per step, one update per generation: at step 1 the loss's policy is the rollout's policy
    assert sorted(seen["live"][0]) == pytest.approx(sorted(first), abs=1e-4)
    assert all(z in (0.0, 1.0) for zs in seen["correct"] + seen["well_formed"] for z in zs)
    # correctness and format are the rewards' own scores of these completions (a right answer is well formed)
    assert all(w >= z for zs, ws in zip(seen["correct"], seen["well_formed"]) for z, w in zip(zs, ws))
    logged = [h for h in trainer.state.log_history if "cdrl/calibration_loss" in h]
    assert len(logged) == 2 and all(0.0 <= h["cdrl/calibration_loss"] <= 1.0 for h in logged)
    # the term reads raw probabilities: a tempered run is refused, as is a confidence it cannot differentiate
    for bad in (["--temperature", "1.2"], ["--confidence_kind", "mean"]):
        cdrl_cfg, grpo_cfg = parse_cdrl_args(args + bad)
        with pytest.raises(ValueError, match="calibration_loss_weight"):
            build_trainer(cdrl_cfg, grpo_cfg)


@pytest.mark.parametrize("unparsed", ["skip", "wrong"])
def test_supervised_calibration_baseline_trains_on_the_brier_loss_alone(tmp_path, one_thread, unparsed):
    """``grpo_weight 0``: the step's loss is exactly w * Brier(live trace probability, correctness) over the
    well-formed completions (``skip``) or all of them, unparsed as wrong (``wrong``), and the weights move."""
    from catts.train.cdrl import parse_cdrl_args, train_cdrl
    from catts.train.pathwise import brier_loss, completion_probability

    args = ["--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "1",
            "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "run"), "--temperature", "1.0",
            "--confidence_kind", "trace_prob", "--calibration_loss_weight", "2.0", "--grpo_weight", "0",
            "--learning_rate", "1e-3", "--calibration_loss_unparsed", unparsed,
            "--original_level", "pure_noise:1"]   # on pure noise the base breaks its format: unparsed replies
    seen: dict = {}

    def hook(trainer):
        seen["before"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        compute = trainer._compute_loss

        def watch(model, inputs):
            loss = compute(model, inputs)
            live = completion_probability(trainer._live_logps.detach(), inputs["completion_mask"], "trace_prob")
            ok = inputs["well_formed"] > 0 if unparsed == "skip" else torch.ones_like(inputs["correct"], dtype=bool)
            seen["unparsed"] = int((inputs["well_formed"] == 0).sum())
            seen["pair"] = (loss.item(), 2.0 * brier_loss(live[ok], inputs["correct"][ok]).item() if ok.any() else 0.0)
            seen["trainer"] = trainer
            return loss

        trainer._compute_loss = watch

    train_cdrl(*parse_cdrl_args(args), trainer_hook=hook)
    loss, expected = seen["pair"]
    assert seen["unparsed"] > 0 and loss == pytest.approx(expected, abs=1e-6)
    after = dict(seen["trainer"].model.named_parameters())
    assert any(not torch.equal(seen["before"][k], after[k].detach()) for k in seen["before"])


def test_answer_mask_by_hand():
    from catts.train.pathwise import answer_mask, completion_probability

    ids = torch.zeros((3, 5), dtype=torch.long)
    mask = answer_mask([(1, 3), None, (4, 5)], ids)
    assert mask.tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    logps = torch.log(torch.tensor([[0.9, 0.5, 0.4, 0.9, 0.9]] * 3))
    assert completion_probability(logps, mask, "answer_prob").tolist() == pytest.approx([0.2, 1.0, 0.9], abs=1e-6)
    with pytest.raises(RuntimeError, match="answer token steps"):
        answer_mask(None, ids)


def test_pathwise_answer_probability_reads_the_answer_tokens(tmp_path, one_thread):
    """With ``confidence_kind answer_prob`` the loss's mask covers exactly the tokens that spell each completion's
    extracted answer, and the loss reads the live probability of those tokens."""
    from catts.train.cdrl import parse_cdrl_args, train_cdrl

    args = ["--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "1",
            "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "run"), "--temperature", "1.0",
            "--confidence_kind", "answer_prob", "--calibration_loss_weight", "1.0"]
    seen: dict = {}

    def hook(trainer):
        compute = trainer._compute_loss

        def watch(model, inputs):
            seen["inputs"], seen["trainer"] = inputs, trainer
            return compute(model, inputs)

        trainer._compute_loss = watch

    train_cdrl(*parse_cdrl_args(args), trainer_hook=hook)
    inputs, trainer = seen["inputs"], seen["trainer"]
    tok = trainer.processing_class.tokenizer
    checked = 0
    for ids, keep, mask, ok in zip(inputs["completion_ids"], inputs["completion_mask"], inputs["answer_mask"],
                                   inputs["well_formed"]):
        text = tok.decode(ids[keep.bool()].tolist(), skip_special_tokens=True)
        assert mask.sum() <= keep.sum()
        if ok and mask.any():
            answer = tok.decode(ids[mask.bool()].tolist(), skip_special_tokens=True).strip()
            box = re.search(r"\\boxed\{([^}]*)\}", text)
            assert answer and box and answer in box.group(1), (answer, text)
            checked += 1
    assert checked > 0


def test_clean_kl_by_hand():
    from catts.train.pathwise import clean_kl

    logps = torch.log(torch.tensor([[0.5, 0.8, 0.9], [0.2, 0.9, 0.9], [0.5, 0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.8, 0.1], [0.9, 0.9, 0.9], [0.5, 0.5, 0.5]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    clean = torch.tensor([True, False, True])
    # k3 per token: r/p - log(r/p) - 1 with r/p the reference's over the policy's probability
    k3 = [0.5 - math.log(0.5) - 1, 0.0, 0.0, 0.0, 0.0]   # row 0's two tokens, row 2's three; row 1 is not clean
    assert clean_kl(logps, ref, mask, clean).item() == pytest.approx(sum(k3) / 5, abs=1e-6)
    assert clean_kl(logps, ref, mask, torch.tensor([False] * 3)).item() == 0.0


def test_clean_anchor_reads_the_clean_originals_of_the_live_policy(tmp_path, one_thread):
    """``anchor_kl_weight``: the anchor is the live policy's KL to the reference over exactly the completions of
    clean originals (logged as cdrl/clean_kl), 0 while the policy is the reference, positive once GRPO has moved it.
    Refused without a reference model (beta 0)."""
    from catts.train.cdrl import build_trainer, parse_cdrl_args, train_cdrl
    from catts.train.pathwise import clean_kl

    args = ["--config", str(CONFIG), "--data", "shapes:test", "--limit", "4", "--max_steps", "3",
            "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "run"), "--beta", "0.04",
            "--original_level", "0", "pure_noise:1", "--learning_rate", "1e-2", "--anchor_kl_weight", "5",
            "--format_weight", "3"]
    seen: list = []

    def hook(trainer):
        compute = trainer._compute_loss

        def watch(model, inputs):
            loss = compute(model, inputs)
            anchor = clean_kl(trainer._live_logps.detach(), inputs["ref_per_token_logps"], inputs["completion_mask"],
                              inputs["clean_original"])
            seen.append((anchor.item(), inputs["clean_original"].tolist(), trainer))
            return loss

        trainer._compute_loss = watch

    train_cdrl(*parse_cdrl_args(args), trainer_hook=hook)
    trainer = seen[0][2]
    assert trainer.reward_weights.tolist() == [3.0, 1.0, 0.5, 1.0]     # format_weight reaches TRL's weights
    history = trainer.cdrl_rollout.history
    # TRL shuffles a generated batch before the loss sees it: count the clean completions of each step
    counts = [sum(step[1]) for step in seen]
    assert counts == [sum("@0/" in h["pair_id"] for h in history[8 * i:8 * i + 8]) for i in range(len(seen))]
    assert 0 < sum(counts) < 8 * len(seen)
    anchors = [a for a, *_ in seen]
    logged = [h["cdrl/clean_kl"] for h in trainer.state.log_history if "cdrl/clean_kl" in h]
    assert logged == pytest.approx(anchors, abs=1e-6)
    assert anchors[0] == pytest.approx(0.0, abs=1e-7)    # step 1: the policy is the reference
    assert max(anchors[1:]) > 1e-6     # the moved policy is off the reference on clean images, and the anchor sees it
    cdrl_cfg, grpo_cfg = parse_cdrl_args(args + ["--beta", "0"])
    with pytest.raises(ValueError, match="beta > 0"):
        build_trainer(cdrl_cfg, grpo_cfg)
    cdrl_cfg, grpo_cfg = parse_cdrl_args(args + ["--grpo_weight", "0"])   # the anchor alone never leaves the reference
    with pytest.raises(ValueError, match="trains nothing"):
        build_trainer(cdrl_cfg, grpo_cfg)


def test_calibration_loss_can_leave_clean_originals_out(tmp_path, one_thread):
    """``calibration_loss_clean false``: the Brier loss runs over the well-formed completions of degraded originals
    only (here with the GRPO loss off, so the step's loss is exactly that)."""
    from catts.train.cdrl import parse_cdrl_args, train_cdrl
    from catts.train.pathwise import brier_loss, completion_probability

    args = ["--config", str(CONFIG), "--data", "easyvqa:test", "--limit", "4", "--max_steps", "1",
            "--per_device_train_batch_size", "16", "--output_dir", str(tmp_path / "run"), "--temperature", "1.0",
            "--confidence_kind", "trace_prob", "--calibration_loss_weight", "2.0", "--grpo_weight", "0",
            "--original_level", "0", "999", "--calibration_loss_clean", "false"]
    seen: dict = {}

    def hook(trainer):
        compute = trainer._compute_loss

        def watch(model, inputs):
            loss = compute(model, inputs)
            live = completion_probability(trainer._live_logps.detach(), inputs["completion_mask"], "trace_prob")
            clean = inputs["clean_original"]
            ok = (inputs["well_formed"] > 0) & ~clean
            seen["clean"] = int(clean.sum())
            seen["pair"] = (loss.item(), 2.0 * brier_loss(live[ok], inputs["correct"][ok]).item())
            seen["all"] = 2.0 * brier_loss(live[inputs["well_formed"] > 0],
                                           inputs["correct"][inputs["well_formed"] > 0]).item()
            return loss

        trainer._compute_loss = watch

    train_cdrl(*parse_cdrl_args(args), trainer_hook=hook)
    loss, expected = seen["pair"]
    assert 0 < seen["clean"] < 16 and loss == pytest.approx(expected, rel=1e-5)
    assert loss > 0.01 and loss != pytest.approx(seen["all"], rel=1e-3)   # the clean rows did count otherwise


def test_rollout_unwraps_the_policy_as_trl_generation_does(one_thread):
    """The rollout takes the policy through TRL's unwrap_model_for_generation (under ZeRO-3 that gathers the
    parameters, which cannot run here): gradient checkpointing (the 7B recipe's) is off and the model in eval mode
    while it generates, with the KV cache, and both are as they were afterwards."""
    from trl.data_utils import prepare_multimodal_messages

    from catts.train.cdrl import build_dataset, build_trainer, parse_cdrl_args

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", str(CONFIG), "--data", "shapes:test", "--limit", "2",
                                          "--gradient_checkpointing", "true", "--output_dir", "/tmp/unused-cdrl"])
    ds = build_dataset(cdrl_cfg)
    trainer = build_trainer(cdrl_cfg, grpo_cfg, dataset=ds)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.gradient_checkpointing_enable()
    model.train()
    seen = []

    def watch(module, args, kwargs):
        seen.append((module.is_gradient_checkpointing, module.training, kwargs["input_ids"].shape[1]))

    handle = model.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        row = ds[0]
        trainer.cdrl_rollout([prepare_multimodal_messages(row["prompt"], images=[row["image"]])] * 2, trainer)
    finally:
        handle.remove()
    assert len(seen) > 3 and not any(gc or training for gc, training, _ in seen)
    assert sum(length == 1 for _, _, length in seen) > len(seen) / 2   # decoding one token a step: the cache
    assert model.is_gradient_checkpointing and model.training
