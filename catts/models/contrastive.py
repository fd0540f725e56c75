"""Contrastive decoding between an image and its noised copy (the visual self-check, spec section 6).

With i the original image, i' the noised one and q the question, step t scores every token v

    score_t(v) = (1 + a) log p(v | y<t, i, q) - a log p(v | y<t, i', q)
    over the plausible tokens  p(v | y<t, i, q) >= b max_u p(u | y<t, i, q)   (-inf elsewhere)

and emits y_t = argmax_v score_t(v) (ties: the lowest id). Three ways to run it:

- ``PairContrast``: the fast path of the transformers backend. One ``model.generate`` runs over
  paired rows (2k: the prompt with i, 2k+1: the same prompt with i'); at each step this logits
  processor combines each pair's two log-softmaxes and forces the chosen token into both rows, so
  both rows keep one prefix and their own KV caches: each image goes through the vision tower once,
  and a step costs one token per row.
- ``contrastive_reference``: the slow, obvious path through ``next_token_logprobs`` (both contexts
  recomputed from scratch at every step); the fast path's test oracle and the benchmark's baseline.
- ``approx_contrastive_step``: one step from the two top-k lists of an API backend ("approx").
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from catts.models.backend import ContrastiveParams, Prompt, TopPieces, Trace


def contrastive_step(logp_i: np.ndarray, logp_n: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """score_t over the vocabulary from the full log-distributions ``[..., V]`` of both images."""
    cut = logp_i.max(-1, keepdims=True) + (math.log(beta) if beta > 0 else -np.inf)
    return np.where(logp_i >= cut, (1 + alpha) * logp_i - alpha * logp_n, -np.inf)


def approx_contrastive_step(top_ids_i: Sequence[int], top_lp_i: Sequence[float], top_ids_n: Sequence[int],
                            top_lp_n: Sequence[float], alpha: float, beta: float) -> tuple[int, float]:
    """(token, score_t) from the two top-k lists only (an API backend's ``top_logprobs``).

    Over the union of both lists: the cut's max is the original list's top-1 (exact); a token missing
    from the noised list gets the noised list's k-th log-probability (an upper bound of its own, so
    its score is a lower bound); a token missing from the original list is dropped: its p is unknown,
    and it is surely below the cut when the original k-th log-probability is.
    """
    lp_i = dict(zip(map(int, top_ids_i), map(float, top_lp_i)))
    lp_n = dict(zip(map(int, top_ids_n), map(float, top_lp_n)))
    kth_n = min(lp_n.values())
    cut = max(lp_i.values()) + (math.log(beta) if beta > 0 else -math.inf)
    best, best_score = -1, -math.inf
    for v in sorted(set(lp_i) | set(lp_n)):
        if v not in lp_i or lp_i[v] < cut:
            continue
        s = (1 + alpha) * lp_i[v] - alpha * lp_n.get(v, kth_n)
        if s > best_score:
            best, best_score = v, s
    return best, best_score


class PairContrast(LogitsProcessor):
    """Combines rows (2k, 2k+1) = (original, noised) and forces the contrastive choice into both.

    ``steps`` holds, per step, the original rows' raw top-k values and ids, the chosen ids and their
    raw log-probabilities (the layout of the backend's sampler); ``scores`` the chosen score_t.
    """

    def __init__(self, params: ContrastiveParams):
        self.params = params
        self.cut = math.log(params.beta) if params.beta > 0 else -math.inf
        self.steps: list[tuple[torch.Tensor, ...]] = []
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        orig, noised = logp[0::2], logp[1::2]
        a = self.params.alpha
        score = ((1 + a) * orig - a * noised).masked_fill(orig < orig.max(-1, keepdim=True).values + self.cut,
                                                          float("-inf"))
        chosen = score.argmax(dim=-1)
        top_vals, top_ids = orig.topk(self.params.top_logprobs, dim=-1)
        self.steps.append((top_vals.cpu(), top_ids.cpu(), chosen.cpu(), orig.gather(1, chosen[:, None])[:, 0].cpu()))
        self.scores.append(score.gather(1, chosen[:, None])[:, 0].cpu())
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, chosen.repeat_interleave(2)[:, None], 0.0)
        return forced


def contrastive_reference(backend, prompts: Sequence[Prompt], noised: Sequence[Prompt],
                          params: ContrastiveParams) -> list[Trace]:
    """The slow path: each step recomputes both contexts of every unfinished prompt from scratch, in one
    ``backend.next_token_logprobs`` call over rows (original, noised) per prompt.

    For a backend with full distributions, token ids and ``eos_ids`` / ``tokenizer`` (transformers);
    stop strings are not applied (a trace ends at an end token or after ``max_new_tokens``).
    """
    if params.stop:
        raise ValueError("contrastive_reference takes no stop strings")
    if len(prompts) != len(noised):
        raise ValueError("one noised prompt per prompt")
    k = params.top_logprobs
    steps: list[list[tuple[int, float, float, np.ndarray, np.ndarray]]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(params.max_new_tokens):
        if not active:
            break
        prefixes = [[s[0] for s in steps[j]] for j in active]
        lp = backend.next_token_logprobs([q for j in active for q in (prompts[j], noised[j])],
                                         [ids for ids in prefixes for _ in range(2)])
        score = contrastive_step(lp[0::2], lp[1::2], params.alpha, params.beta)
        for r, j in enumerate(active):
            tok = int(np.argmax(score[r]))
            order = np.argsort(-lp[2 * r], kind="stable")[:k]
            steps[j].append((tok, float(lp[2 * r, tok]), float(score[r, tok]), lp[2 * r, order], order))
        active = [j for j in active if steps[j][-1][0] not in backend.eos_ids]
    out = []
    for st in steps:
        ids = [s[0] for s in st]
        top_ids = np.stack([s[4] for s in st]).astype(np.int64)
        out.append(Trace(text=backend.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
                         logprobs=np.array([s[1] for s in st], np.float32),
                         top_logprobs=np.stack([s[3] for s in st]).astype(np.float32), top_ids=top_ids,
                         finish_reason="stop" if ids[-1] in backend.eos_ids else "length",
                         tokens=backend.token_pieces(ids),
                         top_tokens=TopPieces(top_ids, lambda i: backend.tokenizer.decode([i])),
                         meta={"contrastive": "exact", "alpha": params.alpha, "beta": params.beta,
                               "contrastive_scores": [s[2] for s in st],
                               "vocab": getattr(backend, "vocab_fingerprint", None)}))
    return out
