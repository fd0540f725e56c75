"""One CDRL step on the embedded tiny model, split into its parts, measured side by side in one run.

The parts, each timed on the same 4 prompts x G = 8 rollouts (32 completions, the shipped recipe's step):

- generation: the G rollouts per prompt on the original image (the rollout function's sampling, top-k recorded);
- noisy rollouts: C' by G paired rollouts sampled on the noisy image (the spec), and by the same completions
  teacher-forced on the noisy image (the option), each timed;
- rewards: the four reward functions (format, output, perception, calibration) as TRL calls them;
- a whole TRL step (``step_time`` in TRL's log, the mean over ``--steps`` steps after a warm-up step); the
  update is that step minus the parts above (with paired rollouts, as the trainer ran).

Then the shipped recipe's two catts extensions (``catts.train.pathwise``: the pathwise Brier loss and the clean
anchor): two more short runs, the recipe as shipped and with both off (GRPO only), whole TRL steps side by side
(both reuse log-probabilities the step computes anyway, so they should cost next to nothing).

The last lines are the ratio of paired to teacher-forced C' cost and of a shipped step to a GRPO-only one.

    python benchmarks/cdrl_step.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def timed(fn, repeats: int = 3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from catts.models.backend import Prompt
    from catts.train.cdrl import build_dataset, build_trainer, parse_cdrl_args
    from catts.train.rollout import split_prompt

    out = tempfile.mkdtemp()
    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", "catts/train/configs/cdrl_tiny_ship.yaml", "--limit", "16",
                                          "--max_steps", str(args.steps + 1), "--logging_steps", "1",
                                          "--output_dir", out])
    dataset = build_dataset(cdrl_cfg)
    trainer = build_trainer(cdrl_cfg, grpo_cfg, dataset)
    rollout = trainer.cdrl_rollout
    backend = rollout.backend(trainer)
    G = grpo_cfg.num_generations
    rows = [dataset[i] for i in range(grpo_cfg.per_device_train_batch_size // G)]
    clean = [Prompt(images=[r["image"]], text=split_prompt(r["prompt"], filled=False)[1], key=r["pair_id"])
             for r in rows]
    noisy = [Prompt(images=[r["noisy_image"]], text=p.text, key=p.key) for r, p in zip(rows, clean)]
    params = rollout._params(grpo_cfg, G, 0)
    backend.model.eval()
    with torch.no_grad():
        t_gen, traces = timed(lambda: backend.generate(clean, params))
        t_paired, _ = timed(lambda: backend.generate(noisy, params))
        flat = [t for ts in traces for t in ts]
        t_forced, _ = timed(lambda: backend.score([p for p in noisy for _ in range(G)],
                                                  [list(t.token_ids) for t in flat], add_end=False))
    columns = {k: [r[k] for r in rows for _ in range(G)] for k in ("answer", "answer_type", "options", "pair_id")}
    conf = [rollout._confidence(t, r) for t, r in zip(flat, [r for r in rows for _ in range(G)])]
    completions = [[{"role": "assistant", "content": t.text}] for t in flat]

    def rewards():
        return [f(completions=completions, confidence=conf, noisy_confidence=conf, **columns)
                for f in trainer.reward_funcs]

    t_rewards, _ = timed(rewards)
    trainer.train()
    steps = [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]
    t_step = float(np.mean(steps))
    t_update = t_step - t_gen - t_paired - t_rewards
    n = len(flat)
    print(f"one CDRL step, {len(rows)} prompts x G {G} = {n} completions, {args.threads} threads:")
    for name, t in (("generation (original image)", t_gen), ("noisy rollouts, paired (the spec)", t_paired),
                    ("noisy, teacher-forced (option)", t_forced), ("rewards (4 functions)", t_rewards),
                    ("update and the rest (step - parts)", t_update), ("whole TRL step (mean)", t_step)):
        print(f"  {name:38s} {t:7.3f} s")
    print(f"paired / teacher-forced C' cost: {t_paired / t_forced:.2f}x")
    plain = mean_step_time(args.steps, out, ["--calibration_loss_weight", "0", "--anchor_kl_weight", "0"])
    pathwise = mean_step_time(args.steps, out, [])
    print(f"  {'TRL step, GRPO only':38s} {plain:7.3f} s")
    print(f"  {'TRL step, + pathwise Brier + anchor':38s} {pathwise:7.3f} s")
    print(f"shipped (pathwise + anchor) / GRPO-only step: {pathwise / plain:.2f}x")


def mean_step_time(steps: int, out: str, extra: list[str]) -> float:
    """Mean TRL ``step_time`` of ``steps`` steps after a warm-up step, the shipped recipe plus ``extra`` flags."""
    from catts.train.cdrl import build_trainer, parse_cdrl_args

    cdrl_cfg, grpo_cfg = parse_cdrl_args(["--config", "catts/train/configs/cdrl_tiny_ship.yaml", "--limit", "16",
                                          "--max_steps", str(steps + 1), "--logging_steps", "1",
                                          "--output_dir", out, *extra])
    trainer = build_trainer(cdrl_cfg, grpo_cfg)
    trainer.train()
    return float(np.mean([h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]))


if __name__ == "__main__":
    main()
