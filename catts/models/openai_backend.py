"""The OpenAI-compatible backend: vLLM, SGLang or an API, through the ``openai`` client, async.

``--model openai:NAME --base-url URL`` (repeatable: requests are spread over the servers, data
parallel). Each sample is one chat-completions request with ``n = 1`` and the seed
``sample_seed(seed, key, index)``, so samples are nested across waves as on the transformers
backend and a server's batching never changes which sample a seed gives. Requests run on one
event loop in a background thread (never ``asyncio.run`` inside a caller's running loop, e.g.
TRL's), at most ``concurrency`` at a time; the client retries 429, 5xx, timeouts and connection
errors with exponential backoff (``max_retries``), each attempt bounded by ``timeout`` seconds. A
request that still fails gives a trace with ``error`` set (empty text), which jobs record as that
sample's error: one dead server never ends a run.

Images go as lossless PNG data URLs. ``logprobs`` with ``top_logprobs`` (at most 20) become the
trace's arrays; servers give token strings, not ids, so ``token_ids`` and ``top_ids`` are -1
(``meta["token_ids"] = "absent"``), and the top-k list is sorted here (vLLM lists the sampled token
first). The key comes from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``) and is never written anywhere: the run identity holds the model name and the
servers' URLs only.

What a server cannot do, ``capabilities`` says: no full next-token distribution, no teacher-forced
scoring of given text (``score``); contrastive decoding only approximately, from the two top-20 lists
of each step (``contrastive_generate``, records say ``approx``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import os
import threading
from typing import Sequence

import numpy as np

from catts.models.backend import Capabilities, ContrastiveParams, Prompt, SamplingParams, Trace, fit_image, \
    sample_seed

PREFIX = "openai:"


def is_openai(model: str) -> bool:
    return str(model).startswith(PREFIX)


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(prompt: Prompt, max_pixels: int | None) -> list[dict]:
    """``Prompt.messages()`` with each image part replaced by its PNG data URL."""
    images = iter(prompt.images)
    out = []
    for m in prompt.messages():
        parts = []
        for part in m["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(fit_image(next(images),
                                                                                              max_pixels))}})
            else:
                parts.append(part)
        out.append({"role": m["role"], "content": parts})
    return out


def trace_from_choice(choice, k: int) -> Trace:
    """A Trace from one chat-completions choice with logprobs (token strings, no ids)."""
    content = (choice.logprobs.content if choice.logprobs is not None else None) or []
    tokens = [c.token for c in content]
    logprobs = np.array([c.logprob for c in content], dtype=np.float32)
    tops = np.full((len(content), k), -np.inf, dtype=np.float32)
    top_tokens = []
    for t, c in enumerate(content):
        pairs = sorted(((x.logprob, x.token) for x in (c.top_logprobs or [])), key=lambda p: -p[0])[:k]
        tops[t, :len(pairs)] = [p[0] for p in pairs]
        top_tokens.append([p[1] for p in pairs])
    finish = "length" if choice.finish_reason == "length" else "stop"
    text = choice.message.content or ""
    if tokens and "".join(tokens) != text and "".join(tokens[:-1]) == text:
        tokens[-1] = ""  # the end token: it adds no text (as the transformers backend's pieces say)
    return Trace(text=text, token_ids=[-1] * len(tokens), logprobs=logprobs,
                 top_logprobs=tops, top_ids=np.full((len(content), k), -1, dtype=np.int64), finish_reason=finish,
                 tokens=tokens, top_tokens=top_tokens, logprob_source="raw", meta={"token_ids": "absent"})


class _Loop:
    """One event loop on a daemon thread; ``run(coro)`` blocks the caller until it is done."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="catts-openai").start()

    def run(self, coro):
        return self.submit(coro).result()

    def submit(self, coro):
        """``coro`` scheduled on the loop; a ``concurrent.futures.Future`` of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint (or several) as a catts backend."""

    capabilities = Capabilities(contrastive="approx", full_distribution=False, prefix_cache=False)

    def __init__(self, model: str, base_urls: Sequence[str], *, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 16, timeout: float = 120.0, max_retries: int = 5,
                 max_pixels: int | None = 1024 * 1024, batch_size: int = 64):
        from openai import AsyncOpenAI

        if not base_urls:
            raise ValueError(f"--model {model}: an OpenAI-compatible model needs --base-url (e.g. "
                             "http://127.0.0.1:8000/v1)")
        self.model = model[len(PREFIX):] if is_openai(model) else model
        self.name = PREFIX + self.model
        self.base_urls = list(base_urls)
        self.max_pixels, self.batch_size, self.concurrency = max_pixels, batch_size, concurrency
        key = os.environ.get(api_key_env) or "EMPTY"  # local servers take any key
        self._loop = _Loop()
        self._clients = [AsyncOpenAI(base_url=url, api_key=key, timeout=timeout, max_retries=max_retries)
                         for url in self.base_urls]
        self._next = itertools.cycle(range(len(self._clients)))
        self.identity = {"model": self.name, "backend": "openai", "base_urls": self.base_urls,
                         "max_pixels": max_pixels}
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "failed": 0}
        self._sem: asyncio.Semaphore | None = None  # one bound on requests in flight, across overlapping calls

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # created on the loop's thread, on first use
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    async def _one(self, sem: asyncio.Semaphore, prompt: Prompt, params: SamplingParams, index: int) -> Trace:
        client = self._clients[next(self._next)]
        k = min(params.top_logprobs, 20)
        body = {"top_k": params.top_k} if params.top_k else {}
        kwargs = dict(model=self.model, messages=chat_messages(prompt, self.max_pixels), n=1,
                      max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                      logprobs=True, top_logprobs=k, stop=list(params.stop) or None,
                      seed=sample_seed(params.seed, prompt.key, index) % (2 ** 31), extra_body=body or None)
        async with sem:
            try:
                reply = await client.chat.completions.create(**kwargs)
            except Exception as e:  # noqa: BLE001 - the sample's error, after the client's retries
                self.usage["failed"] += 1
                return Trace("", [], np.zeros(0, np.float32), np.zeros((0, k), np.float32),
                             np.zeros((0, k), np.int64), finish_reason="error",
                             meta={"error": f"{type(e).__name__}: {_short(e)}"})
        self.usage["requests"] += 1
        if reply.usage is not None:
            self.usage["prompt_tokens"] += reply.usage.prompt_tokens or 0
            self.usage["completion_tokens"] += reply.usage.completion_tokens or 0
        trace = trace_from_choice(reply.choices[0], k)
        trace.meta["usage"] = {"completion_tokens": getattr(reply.usage, "completion_tokens", None),
                               "prompt_tokens": getattr(reply.usage, "prompt_tokens", None)}
        return trace

    async def _all(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Trace]]:
        sem = self._semaphore()
        tasks = [[self._one(sem, p, params, params.first_index + j) for j in range(params.n)] for p in prompts]
        flat = await asyncio.gather(*[t for row in tasks for t in row])
        return [list(flat[i * params.n:(i + 1) * params.n]) for i in range(len(prompts))]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Trace]]:
        """``params.n`` traces per prompt; a failed request is a trace with ``meta["error"]``."""
        return self._loop.run(self._all(prompts, params))

    def submit(self, prompts: Sequence[Prompt], params: SamplingParams):
        """``generate`` without waiting: a ``concurrent.futures.Future`` of its result. Jobs submit the next chunk
        before collecting this one, so the servers never idle at a chunk's tail; the requests of every call in
        flight share the ``concurrency`` bound."""
        return self._loop.submit(self._all(prompts, params))

    def score(self, prompts, continuations, add_end: bool = True) -> list[Trace]:
        raise NotImplementedError(f"{self.name}: an OpenAI-compatible chat server does not score given text; use "
                                  "a local expert for the likelihood voter, or --voter generative")

    def score_candidates(self, prompts, candidates, add_end: bool = True):
        return self.score(prompts, candidates, add_end)

    def next_token_logprobs(self, prompts, prefixes) -> np.ndarray:
        raise NotImplementedError(f"{self.name}: a server gives only the top 20 log-probabilities per step")

    def contrastive_generate(self, prompts: Sequence[Prompt], noised: Sequence[Prompt],
                             params: ContrastiveParams) -> list[Trace]:
        """Greedy contrastive decoding from the two top-20 lists per step (``approx_contrastive_step``).

        Each step asks both contexts for one token, the answer so far sent as a partial assistant message
        (``continue_final_message``, vLLM and SGLang); the server re-tokenises that text, one more reason the
        result is ``approx``. The trace's log-probabilities are the original context's."""
        pairs = list(zip(prompts, noised, strict=True))

        async def run_all() -> list[Trace]:
            sem = asyncio.Semaphore(self.concurrency)
            return list(await asyncio.gather(*[self._contrast(sem, p, q, params) for p, q in pairs]))
        return self._loop.run(run_all())

    async def _step(self, prompt: Prompt, text: str):
        client = self._clients[next(self._next)]
        messages = chat_messages(prompt, self.max_pixels)
        if text:
            messages.append({"role": "assistant", "content": text})
        reply = await client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20,
            extra_body={"continue_final_message": bool(text), "add_generation_prompt": not text})
        choice = reply.choices[0]
        content = (choice.logprobs.content if choice.logprobs is not None else None) or []
        return choice, (content[0] if content else None)

    async def _contrast(self, sem: asyncio.Semaphore, prompt: Prompt, noised: Prompt,
                        params: ContrastiveParams) -> Trace:
        from catts.models.contrastive import approx_contrastive_step

        k = min(params.top_logprobs, 20)
        text, tokens, lps, tops, top_tokens, scores, finish = "", [], [], [], [], [], "length"
        ids: dict[str, int] = {}
        try:
            for _ in range(params.max_new_tokens):
                async with sem:
                    (ci, ti), (_, tn) = await asyncio.gather(self._step(prompt, text), self._step(noised, text))
                if ti is None:  # nothing generated: the context is finished
                    finish = "stop"
                    break
                li = sorted(((x.logprob, x.token) for x in ti.top_logprobs), key=lambda p: -p[0])[:k]
                ln = sorted(((x.logprob, x.token) for x in (tn.top_logprobs if tn else [])), key=lambda p: -p[0])
                idx = [ids.setdefault(t, len(ids)) for _, t in li]
                nidx = [ids.setdefault(t, len(ids)) for _, t in ln] or idx
                chosen, score = approx_contrastive_step(idx, [lp for lp, _ in li], nidx,
                                                        [lp for lp, _ in ln] or [lp for lp, _ in li],
                                                        params.alpha, params.beta)
                token = next(t for t, i in ids.items() if i == chosen)
                ended = ci.finish_reason == "stop" and token == ti.token and not (ci.message.content or "")
                tokens.append("" if ended else token)
                lps.append(dict((t, lp) for lp, t in li)[token])
                tops.append([lp for lp, _ in li] + [-np.inf] * (k - len(li)))
                top_tokens.append([t for _, t in li])
                scores.append(float(score))
                if ended:
                    finish = "stop"
                    break
                text += token
                if params.stop and any(s_ in text for s_ in params.stop):
                    finish = "stop"
                    break
        except Exception as e:  # noqa: BLE001 - the sample's error, after the client's retries
            return Trace("", [], np.zeros(0, np.float32), np.zeros((0, k), np.float32), np.zeros((0, k), np.int64),
                         finish_reason="error", meta={"error": f"{type(e).__name__}: {_short(e)}",
                                                      "contrastive": "approx"})
        T = len(tokens)
        return Trace(text=text, token_ids=[-1] * T, logprobs=np.array(lps, np.float32),
                     top_logprobs=np.array(tops, np.float32).reshape(T, k), top_ids=np.full((T, k), -1, np.int64),
                     finish_reason=finish, tokens=tokens, top_tokens=top_tokens,
                     meta={"token_ids": "absent", "contrastive": "approx", "alpha": params.alpha,
                           "beta": params.beta, "contrastive_scores": scores})


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:300]
