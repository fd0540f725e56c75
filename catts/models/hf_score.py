"""Teacher forcing for the transformers backend: ``score``, ``score_candidates``, ``next_token_logprobs``.

A mixin of ``TransformersBackend`` (it uses its model, tokenizer, ``_encode``, ``_chunks`` and
``make_trace``). A continuation is token ids, text or a Trace: text is tokenised and, with
``add_end``, closed by the model's end token, so a complete answer's likelihood is scored; a
Trace's ids are used only when its vocabulary fingerprint is this model's (ids of another
vocabulary name other tokens); ids outside the vocabulary are an error.

``score_candidates`` runs each prompt once with a KV cache, copies the cache rows to its candidates
(``reorder_cache`` with repeated indices) and runs all candidates in one pass after them: position t
of a candidate gives the distribution of its token t + 1, the prompt pass's last position that of
its first. Text positions after the prompt continue the cache (``cache length + j``); models with
multimodal RoPE (the Qwen2-VL family: a ``rope_deltas`` attribute) get ``real length + j + delta`` on
all three axes, as their own generation does. Equal to ``score`` up to float rounding (tested on
LLaVA, Idefics3, SmolVLM, Gemma3 and Qwen2.5-VL).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from typing import Sequence

import numpy as np
import torch

from catts.models.backend import Prompt, Trace

Continuation = Sequence[int] | str | Trace  # token ids, text or a trace of the same vocabulary


def vocab_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary (every token string with its id, added tokens included)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def rows_of(cache, rows: torch.Tensor):
    """A copy of ``cache`` holding its batch rows ``rows`` (repeats allowed); the original is untouched.

    Shallow copies suffice: cache layers replace their tensors on every update, never write into them.
    """
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.reorder_cache(rows)
    return new


class TeacherForcing:
    """Scoring methods of ``TransformersBackend`` (see the module docstring)."""

    def _setup_scoring(self) -> None:
        """The end token, the vocabulary's fingerprint and size, and the forward's name for the KV cache."""
        self.end_id = self._end_id()
        self.vocab_fingerprint = vocab_fingerprint(self.tokenizer)
        head = self.model.get_output_embeddings()
        self.vocab_size = head.weight.shape[0] if head is not None else self.model.config.get_text_config().vocab_size
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _end_id(self) -> int:
        """The token a complete answer ends with: the first end token the chat template writes after an
        assistant turn (e.g. Gemma's ``<end_of_turn>``, not ``<eos>``); else the first end token."""
        marker = "Qz7xW"
        msgs = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": marker}]}]
        try:
            text = self.processor.apply_chat_template(msgs, tokenize=False)
            after = self.tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False)["input_ids"]
        except Exception:  # noqa: BLE001 - a template without an assistant role: the generation config's
            after = []
        return next((t for t in after if t in self.eos_ids), self.eos_ids[0])

    def continuation_ids(self, continuation: Continuation, add_end: bool = True) -> list[int]:
        """Token ids of a continuation: ids as given, text tokenised (+ the end token when ``add_end``
        and it does not end with one), a Trace's ids when it is of this model's vocabulary."""
        if isinstance(continuation, Trace):
            vocab = continuation.meta.get("vocab")
            if vocab != self.vocab_fingerprint:
                raise ValueError(f"{self.name}: the trace's token ids are of vocabulary {vocab!r}, not this model's "
                                 f"{self.vocab_fingerprint!r}; pass its text (trace.text) to score it here")
            ids = list(continuation.token_ids)
        elif isinstance(continuation, str):
            ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if add_end and (not ids or ids[-1] not in self.eos_ids):
                ids = ids + [self.end_id]
        else:
            ids = [int(t) for t in continuation]
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise ValueError(f"{self.name}: token ids out of its vocabulary (0..{self.vocab_size - 1}): "
                             f"{[t for t in ids if not 0 <= t < self.vocab_size][:5]}; pass text instead")
        return ids

    def _scored(self, ids: list[int], step_logp: torch.Tensor, top_logprobs: int) -> Trace:
        """The Trace of continuation ``ids`` from its ``[T, V]`` log-distributions (row t predicts ids[t])."""
        if not ids:
            return Trace("", [], np.zeros(0, np.float32), np.zeros((0, top_logprobs), np.float32),
                         np.zeros((0, top_logprobs), np.int64), finish_reason="stop",
                         meta={"vocab": self.vocab_fingerprint})
        vals, idx = step_logp.topk(top_logprobs, dim=-1)
        chosen = step_logp.gather(1, torch.tensor(ids, device=step_logp.device)[:, None])[:, 0]
        return self.make_trace(ids, chosen.cpu().numpy(), vals.cpu().numpy(), idx.cpu().numpy(),
                                "stop" if ids[-1] in self.eos_ids else "length")

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Continuation],
              add_end: bool = True, top_logprobs: int = 20) -> list[Trace]:
        conts = [self.continuation_ids(c, add_end) for c in continuations]
        out = []
        for chunk in self._chunks(len(prompts)):
            enc = self._encode([prompts[i] for i in chunk], [conts[i] for i in chunk])
            logp = torch.log_softmax(self.model(**enc).logits.float(), dim=-1)
            length = enc["input_ids"].shape[1]
            for row, i in enumerate(chunk):
                n = len(conts[i])  # position t predicts token t+1
                out.append(self._scored(conts[i], logp[row, length - n - 1:length - 1], top_logprobs))
        return out

    @torch.no_grad()
    def score_candidates(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[Continuation]],
                         add_end: bool = True, top_logprobs: int = 20) -> list[list[Trace]]:
        """``score`` of every candidate of each prompt, each prompt encoded and run once.

        The prompts' pass keeps its KV cache; the candidates (without their last token, which predicts
        nothing) then run as one batch after their prompt's cache rows. The first token's distribution
        is the prompt pass's last one, token t's the candidate pass's position t - 1.
        """
        conts = [[self.continuation_ids(c, add_end) for c in cands] for cands in candidates]
        out: list[list[Trace]] = [[] for _ in prompts]
        for chunk in self._chunks(len(prompts)):
            enc = self._encode([prompts[i] for i in chunk])
            inner = getattr(self.model, "model", None)
            if hasattr(inner, "rope_deltas"):
                inner.rope_deltas = None  # multimodal RoPE: set by this pass, or None (plain positions)
            res = self.model(**enc, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(res.logits[:, -1].float(), dim=-1)
            cache = res.cache if getattr(res, "cache", None) is not None else res.past_key_values
            deltas = getattr(inner, "rope_deltas", None)  # [B, 1] after a pass with images
            rows = [(k, ids) for k, i in enumerate(chunk) for ids in conts[i]]
            for part in [rows[s:s + self.batch_size] for s in range(0, len(rows), self.batch_size)]:
                later = self._after_prompt(enc["attention_mask"], cache, deltas, part)
                for r, (k, ids) in enumerate(part):
                    steps = first[k:k + 1] if later is None else torch.cat([first[k:k + 1], later[r, :len(ids[1:])]])
                    out[chunk[k]].append(self._scored(ids, steps[:len(ids)], top_logprobs))
        return out

    def _after_prompt(self, mask: torch.Tensor, cache, deltas, part: list[tuple[int, list[int]]]):
        """[R, L, V] log-distributions after each candidate's tokens but its last, over cached prompt rows."""
        length = max(len(ids) for _, ids in part) - 1
        if length <= 0:
            return None
        rows = torch.tensor([k for k, _ in part], device=mask.device)
        ids = torch.full((len(part), length), self.pad_id, dtype=torch.long, device=mask.device)
        suffix_mask = torch.zeros_like(ids)
        for r, (_, cont) in enumerate(part):
            fed = cont[:-1]
            ids[r, :len(fed)] = torch.tensor(fed, dtype=torch.long)
            suffix_mask[r, :len(fed)] = 1
        kwargs = {}
        if isinstance(deltas, torch.Tensor):  # multimodal RoPE: text positions continue at real length + delta
            pos = mask.sum(-1)[rows, None] + torch.arange(length, device=mask.device) + deltas.to(mask.device)[rows]
            kwargs["position_ids"] = pos[None].expand(3, -1, -1)
        kwargs[self._cache_kw] = rows_of(cache, rows)
        logits = self.model(input_ids=ids, attention_mask=torch.cat([mask[rows], suffix_mask], dim=1), use_cache=True,
                            **kwargs).logits
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def next_token_logprobs(self, prompts: Sequence[Prompt], prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        rows = []
        for chunk in self._chunks(len(prompts)):
            enc = self._encode([prompts[i] for i in chunk], [prefixes[i] for i in chunk])
            rows.append(torch.log_softmax(self.model(**enc).logits[:, -1].float(), dim=-1).cpu())
        return torch.cat(rows).numpy()
