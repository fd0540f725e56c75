"""CA-TTS per question at N = 8, batched against the same pipeline one trace at a time; same model and seed.

Fast: ``run_tts`` with backends at batch size 64 (all samples of all questions in one ``generate``,
the self-check as paired contrastive rows, one prefill per candidate list). Slow: the same
``run_tts`` with backends at batch size 1 behind ``OneAtATime`` (the self-check by today's per-step
recomputation, every candidate scored on its own). Both must give the same answers, which this
script checks; it also times the self-check alone. The last line is the ratio slow / fast.

    python benchmarks/tts_speed.py [--questions 16] [--n 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from catts.data import load_data
from catts.jobs.probe import Dataset
from catts.jobs.tts import TTSConfig, _Images, items_of, run_tts
from catts.models import load_backend
from catts.models.backend import ContrastiveParams
from catts.models.contrastive import contrastive_reference
from catts.tts.modules import Question, RoleTokens


class OneAtATime:
    """A batch-size-1 backend as the slow path runs it; everything else is delegated to it.

    ``contrastive_generate`` is ``contrastive_reference(inner, ...)``: both contexts recomputed from
    scratch at every step. ``score_candidates`` calls ``inner.score([prompt], [candidate])`` per
    candidate: the backend's own ``score_candidates`` shares one prompt prefill among a prompt's
    candidates whatever the batch size, so this is what "no shared prefill" looks like.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def contrastive_generate(self, prompts, noised, params):
        return contrastive_reference(self.inner, prompts, noised, params)

    def score_candidates(self, prompts, candidates, add_end=True, top_logprobs=20):
        return [[self.inner.score([p], [c], add_end, top_logprobs)[0] for c in cands]
                for p, cands in zip(prompts, candidates)]


def answers(records: list[dict]) -> dict:
    """What must agree between both runs, per question: every method's answer, every sample's prediction."""
    return {r["key"]: {"methods": {t: {k: v.get("answer") for k, v in r[t].items()}
                                   for t in ("methods", "ablations", "weights", "gated")},
                       "samples": [s["prediction"] for s in r["samples"]],
                       "greedy": (r["greedy"] or {}).get("prediction"),
                       "self_check": (r["self_check"] or {}).get("prediction")} for r in records}


def timed_run(base, expert, cfg: TTSConfig, datasets) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run_tts(base, {"expert": expert}, cfg, out, datasets)
        seconds = time.perf_counter() - t0
        lines = (Path(out) / "results.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "error" not in r]
    return seconds, answers(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16, help="half from easyvqa:test, half from shapes:test")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    per = [(args.questions + 1) // 2, args.questions // 2]
    datasets = [Dataset(spec, load_data(spec)[:k]) for spec, k in zip(("easyvqa:test", "shapes:test"), per) if k]
    cfg = TTSConfig(n=args.n, data=[d.spec for d in datasets], degrade=["diffusion:571"], limit=max(per),
                    ablations=False, scaling=[])
    fast = [load_backend(m, batch_size=args.batch_size) for m in (cfg.model, cfg.expert)]
    slow = [OneAtATime(load_backend(m, batch_size=1)) for m in (cfg.model, cfg.expert)]
    q = len(items_of(datasets, cfg))

    warm = TTSConfig(n=1, data=cfg.data[:1], degrade=cfg.degrade, limit=1, ablations=False, scaling=[],
                     tokens=RoleTokens(8, 8, 8, 8, 8))
    for base, expert in (fast, slow):  # warm-up: one question, short replies
        timed_run(base, expert, warm, [Dataset(datasets[0].spec, datasets[0].samples[:1])])

    t_fast, a_fast = timed_run(*fast, cfg, datasets)
    t_slow, a_slow = timed_run(*slow, cfg, datasets)
    if a_fast != a_slow:
        bad = [k for k in a_fast if a_fast[k] != a_slow.get(k)]
        raise SystemExit(f"answers differ between the two runs on {len(bad)} questions, e.g. {bad[0]}")

    images = _Images(cfg, fast[0].max_pixels)
    qs = [Question(it, *images(it)) for it in items_of(datasets, cfg)]
    prompts, noised = [x.prompt() for x in qs], [x.prompt(image=x.noised) for x in qs]
    params = ContrastiveParams(alpha=cfg.alpha, beta=cfg.beta, max_new_tokens=cfg.tokens.base)
    t0 = time.perf_counter()
    c_fast = fast[0].contrastive_generate(prompts, noised, params)
    c_fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    c_slow = slow[0].contrastive_generate(prompts, noised, params)
    c_slow_s = time.perf_counter() - t0
    same_check = [t.token_ids for t in c_fast] == [t.token_ids for t in c_slow]

    print(f"models {cfg.model} + {cfg.expert}, {q} questions x N = {args.n}, degrade {cfg.degrade[0]}, "
          f"{args.threads} threads")
    print(f"batched (batch size {args.batch_size}): {t_fast / q:.2f}s per question")
    print(f"one trace at a time (batch size 1, per-step recomputation): {t_slow / q:.2f}s per question")
    print(f"self-check alone: paired generate {c_fast_s / q:.2f}s, per-step recomputation {c_slow_s / q:.2f}s "
          f"per question ({c_slow_s / c_fast_s:.1f}x), identical tokens: {'yes' if same_check else 'NO'}")
    print("identical answers: yes")
    print(f"speedup: {t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
