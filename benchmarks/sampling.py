"""Batched vs one-trace-at-a-time sampling: 8 samples per question, same model, same seed.

The authors' CA-TTS code calls HF ``generate`` once per sample; catts batches samples and questions.
Because each trace is seeded by (seed, question, sample index), both ways give identical traces,
which this script checks before it prints the ratio on its last line.

    python benchmarks/sampling.py [--model tiny] [--questions 16] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

from catts.data import load_embedded
from catts.jobs.ask import to_prompt
from catts.models import load_backend
from catts.models.backend import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--data", default="shapes:test")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()

    name, split = args.data.split(":")
    prompts = [to_prompt(s) for s in load_embedded(name, split)[: args.questions]]
    params = SamplingParams(n=args.samples, temperature=1.0, top_k=40, max_new_tokens=args.max_new_tokens, seed=0)
    batched = load_backend(args.model, batch_size=args.batch_size)
    sequential = load_backend(args.model, batch_size=1)
    batched.generate(prompts[:2], params)  # warm-up
    sequential.generate(prompts[:1], SamplingParams(max_new_tokens=8))

    t0 = time.perf_counter()
    a = batched.generate(prompts, params)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = sequential.generate(prompts, params)
    t_sequential = time.perf_counter() - t0

    same = [[t.token_ids for t in ts] for ts in a] == [[t.token_ids for t in ts] for ts in b]
    tokens = sum(t.num_tokens for ts in a for t in ts)
    print(f"model {args.model}, {len(prompts)} questions x {args.samples} samples, {tokens} tokens")
    print(f"batched (batch size {args.batch_size}): {t_batched:.2f}s  {tokens / t_batched:.0f} tok/s")
    print(f"sequential (one trace at a time): {t_sequential:.2f}s  {tokens / t_sequential:.0f} tok/s")
    print(f"identical traces: {same}")
    print(f"speedup batched/sequential: {t_sequential / t_batched:.1f}x")


if __name__ == "__main__":
    main()
