"""From module outputs to a method's answer: CA-TTS, its ablations, the baselines and the gate.

Pure bookkeeping over what ``catts.tts.modules`` stored on a ``Question`` (no model calls). A
method that needs a module output not computed yet (a voter verdict on a new candidate list, a
critique of a new leader) returns the request instead of an answer; the job runs the requests in
batches and asks again. So every method is *measured* on the same samples: samples are drawn in
nested waves (sample i has the same seed whatever N), the self-check does not depend on N, and a
reflection is the same whenever its leader is.

Costs: ``generated_tokens`` counts every token any model generated for the method (base and
expert); ``model_calls`` counts requests: one per sampled trace, one per voter prefill or
generative attempt, critic, reflection, self-check (one paired request) and plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from catts.answers import answers_match
from catts.data.benchmarks import task_of
from catts.tts.modules import Question
from catts.tts.prompts import DEFAULT_PLAN, MODULES
from catts.tts.vote import VoteResult, best_of_n, deepconf_offline, final_vote, internal_vote, majority_vote

WEIGHTS = ("mean", "answer_prob", "trace_prob")  # C (the paper's), answer probability, trace probability


@dataclass(frozen=True)
class Schedule:
    """One CA-TTS variant: N, which expert, which modules, the internal vote's weight, planner or not."""

    n: int
    expert: str
    modules: frozenset = frozenset(MODULES)
    voter: bool = True                # self-consistency with the expert's vote (False: internal vote only)
    weight: str = "mean"
    use_plan: bool = True
    voter_mode: str = "likelihood"    # likelihood | generative
    taus: tuple = (0.5, 0.5, 0.5)


@dataclass
class Outcome:
    answer: str | None
    confidence: float
    generated_tokens: int
    model_calls: int
    extra: dict

    def record(self, q: Question) -> dict:
        s, task = q.sample, task_of(q.sample)
        right = task.match(self.answer, s) if task is not None else answers_match(self.answer, s.answer, s.answer_type)
        return {"answer": self.answer, "confidence": round(self.confidence, 6),
                "correct": bool(self.answer is not None and right),
                "generated_tokens": self.generated_tokens, "model_calls": self.model_calls, **self.extra}


class Needs(list):
    """Module outputs a method is waiting for: ("voter", q, expert, candidates) or ("reflect", q, expert, leader)."""


def _sc_tokens(q: Question, n: int) -> int:
    return sum(s["num_tokens"] for s in q.samples[:n])


def voter_probs(q: Question, expert: str, candidates: tuple, mode: str, needs: Needs) -> tuple[dict | None, int, int]:
    """(probabilities or None if the voter failed, tokens, calls) for the candidate list."""
    if not candidates:
        return None, 0, 0
    if mode == "likelihood":
        ll = q.loglik.get(expert, {})
        if not all(c in ll for c in candidates):
            return None, 0, 1  # its scoring failed (recorded in the question's errors)
        top = max(ll[c] for c in candidates)
        w = {c: math.exp(ll[c] - top) for c in candidates}
        total = sum(w.values())
        return {c: v / total for c, v in w.items()}, 0, 1
    entry = q.gen_votes.get((expert, candidates))
    if entry is None:
        needs.append(("voter", q, expert, candidates))
        return None, 0, 0
    return entry["probs"], entry["tokens"], entry["attempts"]


def _internal(q: Question, n: int, weight: str) -> tuple[dict, tuple]:
    samples = q.samples[:n]
    v_int = internal_vote([s["prediction"] for s in samples], [s["confidence"].get(weight) for s in samples])
    return v_int, tuple(sorted(v_int))


def run_schedule(q: Question, s: Schedule) -> Outcome | Needs:
    """The final vote of one CA-TTS variant, the modules in the planner's order (or the default one)."""
    needs = Needs()
    tokens = calls = 0
    order = q.plan.get(s.expert, {}).get("order", list(DEFAULT_PLAN)) if s.use_plan else list(DEFAULT_PLAN)
    if s.use_plan and s.expert in q.plan:
        tokens, calls = q.plan[s.expert]["tokens"], 1
    v_int, voter, reflect_answer, check_answer, leader, voter_ok = {}, None, None, None, None, None
    tau1, tau2, tau3 = s.taus
    for module in order:
        if module not in s.modules:
            continue
        if module == "self-consistency":
            v_int, candidates = _internal(q, s.n, s.weight)
            tokens, calls = tokens + _sc_tokens(q, s.n), calls + min(s.n, len(q.samples))
            if s.voter:
                voter, t, c = voter_probs(q, s.expert, candidates, s.voter_mode, needs)
                tokens, calls, voter_ok = tokens + t, calls + c, voter is not None
        elif module == "reflection":
            so_far = final_vote(v_int, voter, None, check_answer, (tau1, tau2, tau3)).answer
            leader = so_far if so_far is not None else (q.greedy or {}).get("prediction")
            if leader is None:
                continue  # nothing to critique
            r = q.reflections.get((s.expert, leader))
            if r is None:
                needs.append(("reflect", q, s.expert, leader))
                continue
            reflect_answer = r["answer"]
            tokens, calls = tokens + r["critic_tokens"] + r["reflection_tokens"], calls + 2
        elif module == "self-check" and q.check is not None:
            check_answer = q.check["prediction"]
            tokens, calls = tokens + q.check["num_tokens"], calls + 1
    if needs:
        return needs
    vote = final_vote(v_int, voter, reflect_answer, check_answer, s.taus)
    return Outcome(vote.answer, vote.confidence, tokens, calls,
                   {"leader": leader, "reflect": reflect_answer, "check": check_answer, "voter_ok": voter_ok,
                    "v_int": _rounded(v_int), "voter": _rounded(voter or {}), "votes": _rounded(vote.table)})


def _rounded(table: dict) -> dict:
    return {k: round(float(v), 6) for k, v in table.items()}


def gate_confidence(q: Question, expert: str, v_int: dict, voter: dict | None, leader: str | None,
                    mode: str, tau1: float) -> float:
    """The gate's confidence in the leader: ``(V_int[lead] + tau1 p_lead) / (1 + tau1)``.

    ``p_lead`` is the expert's own probability of the leader's boxed answer (exp of its teacher-forced
    log-likelihood after the direct-answer prompt), not its share among the candidates: with one
    distinct candidate a share is 1 whatever the expert thinks, and the gate would never fire where the
    base model is consistently wrong. A generative voter gives no such probability; its share is used.
    A failed voter leaves ``V_int[lead]`` alone.
    """
    if leader is None:
        return 0.0
    own = v_int.get(leader, 0.0)
    if mode == "likelihood" and leader in q.loglik.get(expert, {}):
        p = math.exp(q.loglik[expert][leader])
    elif voter is not None:
        p = voter.get(leader, 0.0)
    else:
        return own
    return (own + tau1 * p) / (1 + tau1)


def run_gated(q: Question, n: int, expert: str, threshold: float, wave: int = 2, weight: str = "mean",
              voter_mode: str = "likelihood", taus: tuple = (0.5, 0.5, 0.5)) -> Outcome | Needs:
    """Confidence-gated CA-TTS (spec section 7): samples in waves of ``wave`` until the gate's confidence in
    the leader of the vote so far (``gate_confidence``) reaches ``threshold`` or N samples are drawn;
    reflection and self-check run only when it is below the threshold. The default module order, no
    planner."""
    needs = Needs()
    tokens = calls = 0
    k, share, v_int, voter = 0, 0.0, {}, None
    while k < n:
        k = min(n, k + wave)
        v_int, candidates = _internal(q, k, weight)
        voter, t, c = voter_probs(q, expert, candidates, voter_mode, needs)
        calls += c
        tokens += t
        if needs:
            return needs
        vote = final_vote(v_int, voter, None, None, taus)
        share = gate_confidence(q, expert, v_int, voter, vote.answer, voter_mode, taus[0])
        if share >= threshold:
            break
    tokens, calls = tokens + _sc_tokens(q, k), calls + min(k, len(q.samples))
    reflect_answer = check_answer = None
    ran = share < threshold
    if ran:
        leader = vote.answer if vote.answer is not None else (q.greedy or {}).get("prediction")
        if leader is not None:
            r = q.reflections.get((expert, leader))
            if r is None:
                needs.append(("reflect", q, expert, leader))
                return needs
            reflect_answer = r["answer"]
            tokens, calls = tokens + r["critic_tokens"] + r["reflection_tokens"], calls + 2
        if q.check is not None:
            check_answer = q.check["prediction"]
            tokens, calls = tokens + q.check["num_tokens"], calls + 1
    final = final_vote(v_int, voter, reflect_answer, check_answer, taus)
    return Outcome(final.answer, final.confidence, tokens, calls,
                   {"samples": k, "gate_confidence": round(share, 6), "modules_ran": ran})


def baselines(q: Question, n: int, deepconf_keep: float = 0.1) -> dict[str, Outcome]:
    """pass@1 (greedy), majority vote, best-of-N by C and DeepConf offline (bottom-10% and tail
    confidence; keep the top 10% and 90%) over the first ``n`` samples."""
    samples = q.samples[:n]
    answers = [s["prediction"] for s in samples]
    sc_tokens, sc_calls = _sc_tokens(q, n), len(samples)

    def out(v: VoteResult, confidence: float | None = None) -> Outcome:
        return Outcome(v.answer, v.confidence if confidence is None else confidence, sc_tokens, sc_calls, {})

    g = q.greedy or {"prediction": None, "confidence": {}, "num_tokens": 0}
    result = {"pass@1": Outcome(g["prediction"], g["confidence"].get("answer_prob") or 0.0, g["num_tokens"], 1, {}),
              "majority": out(majority_vote(answers))}
    best = best_of_n(answers, [s["confidence"]["mean"] for s in samples])
    own = [s for s in samples if s["prediction"] == best.answer]  # the chosen trace: the most confident (first)
    picked = max(own, key=lambda s: s["confidence"]["mean"]) if own else None
    result["best-of-n"] = out(best, (picked or {}).get("confidence", {}).get("answer_prob") or 0.0)
    for name, key in (("bottom10", "bottom10"), ("tail", "tail")):
        for label, keep in (("low", deepconf_keep), ("high", 0.9)):
            conf = [s["confidence"].get(key) for s in samples]
            name_ = "deepconf" if (name, label) == ("bottom10", "low") else f"deepconf-{label}-{name}"
            result[name_] = out(deepconf_offline(answers, [0.0 if c is None else c for c in conf], keep=keep))
    return result
