"""The CA-TTS modules run on a batch of questions (spec section 6): every model call of CA-TTS lives here.

Each function takes the questions that need it, makes *batched* backend calls (all samples of all
questions in one ``generate``; all candidates of a question in one prefill) and stores what it got
on each ``Question``. What a method does with those outputs (which samples, which leader, which
modules) is pure bookkeeping in ``catts.tts.schedule``, so that every baseline, ablation, N and
gate threshold is computed from the same model outputs, and a module is run again only where its
input differs (the critic is asked once per distinct leader).

A failing batch is retried one question at a time; a question whose call still fails gets that
module's error on its record and takes no part in that module (it never stops the run).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from catts.data.benchmarks import task_of
from catts.jobs.ask import Item, grade
from catts.models.backend import Backend, ContrastiveParams, Prompt, SamplingParams, Trace
from catts.tts import prompts as P

log = logging.getLogger("catts")

CONFIDENCE_KEYS = ("mean", "tail", "bottom10", "lowest_window", "answer_prob", "trace_prob")


@dataclass(frozen=True)
class RoleTokens:
    """Maximum new tokens per role."""

    base: int = 128
    critic: int = 96
    reflection: int = 64
    planner: int = 48
    voter: int = 64


@dataclass(eq=False)  # hashed by identity: requests are (question, ...) tuples
class Question:
    """One question of a CA-TTS run and everything the modules produced for it."""

    item: Item
    image: object                # the image the base model sees (already degraded by the job)
    noised: object = None        # its noised copy for the self-check
    greedy: dict | None = None
    samples: list[dict] = field(default_factory=list)
    check: dict | None = None
    plan: dict = field(default_factory=dict)          # expert -> {order, parsed, reply, tokens}
    loglik: dict = field(default_factory=dict)        # expert -> {candidate: log-likelihood}
    gen_votes: dict = field(default_factory=dict)     # (expert, candidates) -> {probs, attempts, tokens, replies}
    reflections: dict = field(default_factory=dict)   # (expert, leader) -> {critique, verdict, answer, ...}
    errors: list[dict] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)

    @property
    def sample(self):
        return self.item.sample

    def prompt(self, text: str | None = None, turns=(), image=None) -> Prompt:
        return Prompt(images=[self.image if image is None else image], text=P.base_prompt(self.sample)
                      if text is None else text, key=self.item.key, turns=turns)

    def box_of(self, answer: str) -> str:
        """The box content the voter scores for ``answer``: that of the first sample that gave it (the base
        model's own way of writing it), else how a prompt shows it. The first, so that it is the same at
        every N whose samples hold the answer (the nested N of a scaling run)."""
        raw = next((s["raw"] for s in self.samples if s["prediction"] == answer and s.get("raw")), None)
        return raw or P.display_answer(answer, self.sample.options)


def compact(graded: dict, trace: Trace) -> dict:
    """What a record keeps of one graded trace (the text too, so a run can be regraded)."""
    return {"prediction": graded["prediction"], "correct": graded["correct"], "extraction": graded["extraction"],
            "raw": graded["raw_answer"], "confidence": {k: graded["confidence"].get(k) for k in CONFIDENCE_KEYS},
            "num_tokens": graded["num_tokens"], "finish_reason": graded["finish_reason"], "text": graded["text"],
            **({"error": trace.meta["error"]} if trace.meta.get("error") else {})}


def _grade(q: Question, trace: Trace) -> dict:
    s = q.sample
    return compact(grade(trace, s.answer, s.answer_type, s.options, task=task_of(s), sample=s), trace)


def _call(name: str, reqs: Sequence, fn: Callable[[Sequence], list], timer: Counter,
          question: Callable[[object], Question] = lambda r: r) -> list:
    """``fn(reqs)`` as one batch; if it fails, one request at a time (a failure is that question's error,
    its result None). ``question(req)`` is the question a request belongs to."""
    t0 = time.perf_counter()
    try:
        out = fn(reqs)
        if len(out) != len(reqs):
            raise RuntimeError(f"{name}: the backend returned {len(out)} results for {len(reqs)} requests")
    except Exception as e:  # noqa: BLE001 - find the question that broke the batch, keep the others
        if len(reqs) > 1:
            log.warning("%s: a batch of %d failed (%s: %s); one at a time", name, len(reqs), type(e).__name__, e)
        out = []
        for r in reqs:
            try:
                out.append(fn([r])[0])
            except Exception as e1:  # noqa: BLE001
                q = question(r)
                q.errors.append({"stage": name, "error": f"sample {q.sample.id!r}: {name} failed: "
                                                         f"{type(e1).__name__}: {e1}"})
                out.append(None)
    spent = time.perf_counter() - t0
    timer[name] += spent
    for r in reqs:
        question(r).seconds[name] += spent / max(1, len(reqs))
    return out


# ---------------------------------------------------------------- the base model's own answers

def sample_answers(base: Backend, qs: Sequence[Question], n: int, temperature: float, top_k: int, seed: int,
                   max_new_tokens: int, timer: Counter) -> None:
    """The greedy answer (pass@1) and ``n`` samples of every question (sample indices 0..n-1)."""
    greedy = _call("greedy", qs, lambda b: [t[0] for t in base.generate([q.prompt() for q in b],
                                                                      SamplingParams(max_new_tokens=max_new_tokens))],
                   timer)
    params = SamplingParams(n=n, temperature=temperature, top_k=top_k, seed=seed, max_new_tokens=max_new_tokens)
    sampled = _call("sampling", qs, lambda b: base.generate([q.prompt() for q in b], params), timer)
    for q, g, ts in zip(qs, greedy, sampled):
        q.greedy = _grade(q, g) if g is not None else None
        q.samples = [_grade(q, t) for t in ts] if ts is not None else []


def self_check(base: Backend, qs: Sequence[Question], alpha: float, beta: float, max_new_tokens: int,
               timer: Counter) -> None:
    """Greedy contrastive decoding of the base model between each question's image and its noised copy."""
    params = ContrastiveParams(alpha=alpha, beta=beta, max_new_tokens=max_new_tokens)
    traces = _call("self-check", qs, lambda b: base.contrastive_generate(
        [q.prompt() for q in b], [q.prompt(image=q.noised) for q in b], params), timer)
    for q, t in zip(qs, traces):
        if t is not None:
            q.check = _grade(q, t) | {"contrastive": t.meta.get("contrastive", "exact")}


# ---------------------------------------------------------------- the expert's roles

def plan(expert_name: str, expert: Backend, qs: Sequence[Question], max_new_tokens: int, timer: Counter) -> None:
    """The planner's order per question; a reply that does not parse falls back to the default order."""
    replies = _call("planner", qs, lambda b: [t[0] for t in expert.generate(
        [q.prompt(P.planner_prompt(q.sample)) for q in b], SamplingParams(max_new_tokens=max_new_tokens))], timer)
    for q, t in zip(qs, replies):
        t = None if t is not None and t.meta.get("error") else t
        order = P.parse_plan(t.text) if t is not None else None
        q.plan[expert_name] = {"order": order or list(P.DEFAULT_PLAN), "parsed": order is not None,
                               "reply": t.text if t is not None else None, "tokens": t.num_tokens if t else 0}


def score_candidates(expert_name: str, expert: Backend, qs: Sequence[Question], timer: Counter) -> None:
    """The likelihood voter: the expert's log-likelihood of every distinct sampled answer (one prefill each)."""
    todo = [(q, [a for a in dict.fromkeys(s["prediction"] for s in q.samples) if a is not None
                 and a not in q.loglik.get(expert_name, {})]) for q in qs]
    todo = [(q, cands) for q, cands in todo if cands]
    if not todo:
        return
    results = _call("voter", todo, lambda b: expert.score_candidates(
        [q.prompt(P.direct_prompt(q.sample)) for q, _ in b],
        [[P.candidate_continuation(q.box_of(a)) for a in cands] for q, cands in b]), timer, lambda r: r[0])
    for (q, cands), traces in zip(todo, results):
        if traces is not None:
            q.loglik.setdefault(expert_name, {}).update({a: float(t.logprobs.sum()) for a, t in zip(cands, traces)})


def generative_votes(expert_name: str, expert: Backend, requests: Sequence[tuple[Question, tuple[str, ...]]],
                     retries: int, max_new_tokens: int, timer: Counter) -> None:
    """The generative voter: a JSON array of probabilities per candidate list; a reply that does not parse
    is asked again (sampled, a new sample each time) up to ``retries`` times, then recorded as failed."""
    pending = [(q, c) for q, c in dict.fromkeys(requests) if (expert_name, c) not in q.gen_votes]
    for q, c in pending:
        q.gen_votes[(expert_name, c)] = {"probs": None, "attempts": 0, "tokens": 0, "replies": []}
    for attempt in range(retries):
        if not pending:
            break
        params = SamplingParams(max_new_tokens=max_new_tokens) if attempt == 0 else SamplingParams(
            max_new_tokens=max_new_tokens, temperature=0.7, first_index=attempt)
        replies = _call("voter", pending, lambda b: [t[0] for t in expert.generate(
            [q.prompt(P.voter_prompt(q.sample, c)) for q, c in b], params)], timer, lambda r: r[0])
        still = []
        for (q, c), t in zip(pending, replies):
            entry = q.gen_votes[(expert_name, c)]
            entry["attempts"] += 1
            if t is None:
                continue
            entry["tokens"] += t.num_tokens
            entry["replies"].append(t.text)
            probs = P.parse_probabilities(t.text, len(c))
            if probs is None:
                still.append((q, c))
            else:
                entry["probs"] = dict(zip(c, probs))
        pending = still


def _first_answer(q: Question, lead: str) -> str:
    """The base model's own answer for the leader as the first turn: its greedy answer if that is the
    leader, else its first sample giving it, so that one critique-and-reflection serves every N (and
    every variant) with that leader."""
    if q.greedy and q.greedy["prediction"] == lead:
        return q.greedy["text"]
    first = next((s for s in q.samples if s["prediction"] == lead), None)
    return first["text"] if first else P.candidate_continuation(P.display_answer(lead, q.sample.options))


def reflect(expert_name: str, expert: Backend, base: Backend, requests: Sequence[tuple[Question, str]],
            tokens: RoleTokens, timer: Counter) -> None:
    """Critic then reflection for each (question, leader): the expert critiques the leader, the base model
    answers again greedily with its own answer and the critique in context."""
    todo = [(q, lead) for q, lead in dict.fromkeys(requests) if (expert_name, lead) not in q.reflections]
    if not todo:
        return
    critiques = _call("critic", todo, lambda b: [t[0] for t in expert.generate(
        [q.prompt(P.critic_prompt(q.sample, lead)) for q, lead in b],
        SamplingParams(max_new_tokens=tokens.critic))], timer, lambda r: r[0])
    ready = []
    for (q, lead), c in zip(todo, critiques):
        if c is not None and c.meta.get("error"):  # a failed request (OpenAI-compatible backends)
            q.errors.append({"stage": "critic", "error": f"sample {q.sample.id!r}: critic failed: {c.meta['error']}"})
            c = None
        if c is None:
            q.reflections[(expert_name, lead)] = {"leader": lead, "critique": None, "answer": None, "correct": False,
                                                  "critic_tokens": 0, "reflection_tokens": 0, "error": "critic"}
        else:
            ready.append((q, lead, c, q.prompt(turns=P.reflection_turns(_first_answer(q, lead), c.text))))
    answers = _call("reflection", ready, lambda b: [t[0] for t in base.generate(
        [r[3] for r in b], SamplingParams(max_new_tokens=tokens.reflection))], timer, lambda r: r[0]) if ready else []
    for (q, lead, c, _), t in zip(ready, answers):
        graded = _grade(q, t) if t is not None else None
        q.reflections[(expert_name, lead)] = {
            "leader": lead, "critique": c.text, "verdict": P.critique_verdict(c.text), "critic_tokens": c.num_tokens,
            "answer": graded["prediction"] if graded else None, "correct": graded["correct"] if graded else False,
            "text": graded["text"] if graded else None, "reflection_tokens": graded["num_tokens"] if graded else 0}
