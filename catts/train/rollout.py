"""CDRL rollouts (spec section 5) through TRL's ``GRPOTrainer(rollout_func=...)`` extension point.

Which extension point, and why: TRL does not hand log-probabilities to reward functions, and its vLLM path keeps only
the top-1 log-probability of each sampled token, while C needs the policy's raw top-k distribution at every
completion token. ``GRPOTrainer`` takes a ``rollout_func(prompts, trainer) -> dict`` (public, marked experimental in
TRL 1.x): it must return ``prompt_ids``, ``completion_ids`` and ``logprobs`` (one entry per prompt it was given) and
every other key is forwarded, one value per completion, to the reward functions. ``make_rollout`` builds such a
function. On each call it

1. wraps the trainer's live policy and processor in ``TransformersBackend.from_model``: generation and scoring are
   the same code as in probe and CA-TTS. The policy comes from TRL's ``unwrap_model_for_generation``, as TRL's own
   generation does: under DeepSpeed ZeRO-3 its parameters are gathered for the rollout (each rank then generates
   as many tokens as it needs without collective calls, which would hang otherwise), and gradient checkpointing is
   off during it, as in TRL's own generation;
2. samples one completion per prompt entry on the original image (TRL's sampler already repeats each prompt
   ``num_generations`` = G times, so the G rollouts of a prompt are its G entries), with the GRPO config's
   ``temperature``, ``top_k``, ``top_p`` and ``max_completion_length``, seeded by (seed + global step, pair id,
   rollout index j), without gradient; with GRPO's ``use_vllm`` the completions come from TRL's vLLM instead
   (``catts.train.trl_vllm``, which says what differs);
3. computes C_j = ``completion_confidence`` (kind ``confidence_kind``, default ``"mean"``) from the top-k raw
   log-probabilities recorded while sampling;
4. computes C'_j on the noisy image, by ``c_prime``:

   - ``"teacher_forced"`` (default; the spec's cheaper option): the same completion scored by teacher forcing
     (``backend.score``) on the noisy image;
   - ``"paired"`` (the paper's): G paired rollouts sampled on the noisy image (same seeds), C'_j of paired
     rollout j. The paired rollouts supply confidences only, they are not trained on;

5. returns ``prompt_ids`` (the chat-templated prompt with the image tokens, as the processor encodes it),
   ``completion_ids`` (the sampled tokens, the end token included when the completion stopped), ``logprobs``
   (raw log p of each sampled token; TRL uses them only for vLLM importance sampling, off on this path) and the extra
   fields ``confidence`` and ``noisy_confidence``, which reach ``catts.train.rewards`` as columns; with
   ``confidence_kind="answer_prob"`` the token steps of each completion's extracted answer are kept in
   ``last_answer_steps`` (for ``catts.train.pathwise``).

TRL specifics handled here: ``rollout_func`` receives only the prompts (TRL has already put the original image into
each prompt's message, and passes no other column), so the noisy image and the grading columns are found through
``PairLookup``, keyed by the prompt text and a fingerprint of the original image's pixels; TRL passes ``images=None``
to generation on this path and restores the dataset images for the loss's forward pass, so the prompt ids here
are encoded with the same processor and chat template (``max_pixels=None``: the image is not resized, as TRL does
not resize it either). The policy runs in eval mode during the rollout (no dropout in the confidences; the previous
mode, like gradient checkpointing, is restored). Each call's results are appended to ``rollout.history`` (step, pair id, completion ids and
text, C, C'), for logging and tests, and to the file ``rollout.log_path`` when set (CDRL's ``rollouts.jsonl``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catts.confidence.answer import answer_token_steps
from catts.models.backend import Prompt, SamplingParams
from catts.train.pairs import image_fingerprint
from catts.train.rewards import CONFIDENCE_KINDS, completion_confidence

C_PRIMES = ("teacher_forced", "paired")


def split_prompt(prompt: list[dict], *, filled: bool = True) -> tuple[list, str]:
    """The images and the user text of a TRL conversational prompt whose first user turn holds typed parts
    (``{"type": "image", "image": PIL}`` once TRL has filled the placeholder, ``{"type": "text", ...}``).
    ``filled=False``: a dataset row's prompt, whose image parts are placeholders (their images come back None)."""
    user = next((m for m in prompt if m.get("role") == "user"), None)
    if user is None:
        raise ValueError("a CDRL prompt needs a user turn")
    content = user["content"]
    if isinstance(content, str):
        return [], content
    images = [p.get("image") for p in content if p.get("type") == "image"]
    if filled and any(im is None for im in images):
        raise ValueError("the prompt's image placeholder is not filled: the dataset needs an 'image' column")
    text = "".join(p.get("text") or "" for p in content if p.get("type") == "text")
    return images, text


class PairLookup:
    """The dataset row of a rollout prompt: (user text, original image fingerprint) -> row index.

    Two rows with the same key but different noisy images (e.g. one sample at several noise levels) cannot be told
    apart from the prompt alone: that raises ValueError here, at construction."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.index: dict[tuple[str, str], int] = {}
        for i, row in enumerate(dataset):
            _, text = split_prompt(row["prompt"], filled=False)
            key = (text, image_fingerprint(row["image"]))
            if key in self.index:
                other = dataset[self.index[key]]
                if image_fingerprint(other["noisy_image"]) != image_fingerprint(row["noisy_image"]):
                    raise ValueError(f"rows {self.index[key]} and {i} (pair ids {other['pair_id']!r}, "
                                     f"{row['pair_id']!r}) share prompt and image but not the noisy image: the "
                                     "rollout cannot tell them apart; use one noise level per sample")
                continue
            self.index[key] = i

    def row(self, images: Sequence, text: str) -> dict:
        if len(images) != 1:
            raise ValueError(f"a CDRL prompt holds exactly one image, got {len(images)}")
        key = (text, image_fingerprint(images[0]))
        if key not in self.index:
            raise KeyError(f"no pair row for the prompt {text[:60]!r}: the rollout was given a prompt not in the "
                           "dataset it was built with")
        return self.dataset[self.index[key]]


@dataclass
class Rollout:
    """The ``rollout_func`` of ``make_rollout`` (callable as TRL calls it)."""

    lookup: PairLookup
    processor: Any
    confidence_kind: str = "mean"
    c_prime: str = "teacher_forced"
    seed: int = 0
    batch_size: int = 16
    history: list[dict] = field(default_factory=list)
    log_path: Path | None = None  # each call's records are appended here too, one JSON line each

    def __post_init__(self):
        if self.confidence_kind not in CONFIDENCE_KINDS:
            raise ValueError(f"confidence_kind must be one of {CONFIDENCE_KINDS}, got {self.confidence_kind!r}")
        if self.c_prime not in C_PRIMES:
            raise ValueError(f"c_prime must be one of {C_PRIMES}, got {self.c_prime!r}")

    def backend(self, trainer, model=None):
        """The live policy (``model``, default the trainer's unwrapped model) as a catts backend."""
        from catts.models.hf import TransformersBackend

        model = trainer.accelerator.unwrap_model(trainer.model) if model is None else model
        return TransformersBackend.from_model(model, self.processor, name="policy", batch_size=self.batch_size,
                                              max_pixels=None)

    @contextmanager
    def policy(self, trainer):
        """The live policy, ready to generate: TRL's ``unwrap_model_for_generation`` (ZeRO-3 parameters gathered, so
        ranks that generate different lengths make no collective calls; gradient checkpointing off) in eval mode
        (no dropout in the confidences); all restored afterwards."""
        from trl.models import unwrap_model_for_generation

        wrapped = getattr(trainer, "model_wrapped", None) or trainer.model
        with unwrap_model_for_generation(
                wrapped, trainer.accelerator,
                gather_deepspeed3_params=getattr(trainer.args, "ds3_gather_for_generation", True),
                gradient_checkpointing_kwargs=getattr(trainer.args, "gradient_checkpointing_kwargs", None)) as model:
            was_training = model.training
            model.eval()
            try:
                yield model
            finally:
                model.train(was_training)

    def _params(self, args, n: int, step: int) -> SamplingParams:
        return SamplingParams(n=n, temperature=float(args.temperature), top_k=int(args.top_k or 0),
                              top_p=float(args.top_p), max_new_tokens=int(args.max_completion_length),
                              seed=self.seed + step)

    def _confidence(self, trace, row: dict) -> float:
        return completion_confidence(trace, self.confidence_kind, answer_type=row["answer_type"],
                                     options=row["options"] or ())

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        with self.policy(trainer) as model:
            return self._rollout(prompts, trainer, self.backend(trainer, model))

    def _rollout(self, prompts: list, trainer, backend) -> dict[str, list]:
        step = int(trainer.state.global_step)
        use_vllm = bool(getattr(trainer, "use_vllm", False))
        # unique prompts in order of first appearance, each with its entries (TRL repeats each G times)
        groups: dict[tuple[str, str], list[int]] = {}
        parts = []
        for i, prompt in enumerate(prompts):
            images, text = split_prompt(prompt)
            parts.append((images, text))
            groups.setdefault((text, image_fingerprint(images[0]) if images else ""), []).append(i)
        n = len(prompts)
        rows, clean, noisy, prompt_ids, noisy_ids = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        for members in groups.values():
            images, text = parts[members[0]]
            row = self.lookup.row(images, text)
            key = str(row["pair_id"])
            clean_prompt = Prompt(images=list(images), text=text, key=key)
            noisy_prompt = Prompt(images=[row["noisy_image"]], text=text, key=key)
            ids = self.prompt_ids(backend, clean_prompt)
            nids = self.prompt_ids(backend, noisy_prompt) if use_vllm and self.c_prime == "paired" else None
            for i in members:
                rows[i], clean[i], noisy[i], prompt_ids[i], noisy_ids[i] = row, clean_prompt, noisy_prompt, ids, nids
        with torch.no_grad():
            if use_vllm:  # catts.train.trl_vllm: one collective call per kind of image
                from catts.train.trl_vllm import vllm_generate

                traces = vllm_generate(trainer, backend, clean, prompt_ids)
                if self.c_prime == "paired":
                    noisy_traces = vllm_generate(trainer, backend, noisy, noisy_ids)
            else:
                traces, noisy_traces = [None] * n, [None] * n
                for members in groups.values():
                    params = self._params(trainer.args, len(members), step)
                    for i, trace in zip(members, backend.generate([clean[members[0]]], params)[0]):
                        traces[i] = trace
                    if self.c_prime == "paired":
                        for i, trace in zip(members, backend.generate([noisy[members[0]]], params)[0]):
                            noisy_traces[i] = trace
            if self.c_prime == "teacher_forced":
                noisy_traces = backend.score(noisy, [list(t.token_ids) for t in traces], add_end=False)
        completion_ids, logprobs, records = [], [], []
        conf, noisy_conf, answer_steps = [], [], []
        for row, trace, ntrace in zip(rows, traces, noisy_traces):
            completion_ids.append([int(t) for t in trace.token_ids])
            logprobs.append([float(x) for x in trace.logprobs])
            conf.append(self._confidence(trace, row))
            noisy_conf.append(self._confidence(ntrace, row))
            answer_steps.append(answer_token_steps(trace, row["answer_type"], row["options"] or ())
                                if self.confidence_kind == "answer_prob" else None)
            records.append({"step": step, "pair_id": str(row["pair_id"]), "completion_ids": completion_ids[-1],
                            "text": trace.text, "noisy_text": ntrace.text, "confidence": conf[-1],
                            "noisy_confidence": noisy_conf[-1], "c_prime": self.c_prime,
                            "generator": "vllm" if use_vllm else "transformers"})
        self.history.extend(records)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.writelines(json.dumps(rec) + "\n" for rec in records)
        self.last_answer_steps = answer_steps
        return {"prompt_ids": [list(ids) for ids in prompt_ids], "completion_ids": completion_ids,
                "logprobs": logprobs, "confidence": conf, "noisy_confidence": noisy_conf}

    @staticmethod
    def prompt_ids(backend, prompt: Prompt) -> list[int]:
        """The prompt's token ids as the processor encodes the chat-templated text with its image."""
        images = [list(prompt.images)] if prompt.images else None
        enc = backend.processor(text=[backend.chat_text(prompt)], images=images,
                                return_tensors="pt")
        return enc["input_ids"][0].tolist()


def make_rollout(dataset, processor, *, confidence_kind: str = "mean", c_prime: str = "teacher_forced",
                 seed: int = 0, batch_size: int = 16) -> Rollout:
    """The CDRL ``rollout_func`` for ``GRPOTrainer(rollout_func=..., processing_class=processor)`` over the pair
    ``dataset`` of ``catts.train.pairs.build_pairs`` (see the module)."""
    return Rollout(PairLookup(dataset), processor, confidence_kind=confidence_kind, c_prime=c_prime, seed=seed,
                   batch_size=batch_size)


def rollout_stats(confidence: Sequence[float], noisy_confidence: Sequence[float]) -> dict[str, float]:
    """Means of C, C' and C - C' over the finite values (NaN when none)."""
    c = np.asarray(confidence, dtype=np.float64)
    cn = np.asarray(noisy_confidence, dtype=np.float64)
    d = c - cn

    def mean(v):
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else math.nan

    return {"confidence": mean(c), "noisy_confidence": mean(cn), "confidence_gap": mean(d)}


__all__ = [
    "C_PRIMES",
    "PairLookup",
    "Rollout",
    "image_fingerprint",
    "make_rollout",
    "rollout_stats",
    "split_prompt",
]

