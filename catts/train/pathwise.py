"""The calibration term's pathwise gradient: a catts extension of CDRL, off by default (docs/cdrl.md).

GRPO treats a reward as a number the environment hands back: it raises or lowers the log-probability of each
sampled completion by its advantage. CDRL's confidence is not such a number: C is a function of the policy's own
token probabilities, so the calibration reward has a second gradient, through C, that GRPO drops. On a sharp
policy that is most of the signal: pushing up a sampled completion raises its confidence, and a group of identical
completions gives GRPO nothing at all. In docs/cdrl.md no run with the spec's reward alone lowered the confidence
under noise.

``CDRLTrainer`` (a ``trl.GRPOTrainer``) adds that gradient as a loss on the completions GRPO trains on:

    L_cal = w * mean_i (c_i - z_i)^2

the Brier score (a proper score: for a fixed completion its optimum is c = P(correct)) of each completion's
confidence c_i on its original image against its correctness z_i (R_output of the same step), with the gradient
taken through c_i. c_i is the trace probability ``exp(mean_t log p(y_t))``, the sequence probability
``exp(sum_t log p(y_t))`` or the answer probability (the same sum over the tokens that spell the extracted answer,
located by the rollout; for a boxed option letter, the letter token's own probability, where the probe
renormalises over the option letters). The log-probabilities are the ones TRL's loss computes anyway (no extra
forward pass); TRL computes them at the sampling temperature, so the term needs ``temperature: 1``, the raw
probabilities the probe reads.

The mean runs over the well-formed completions (R_format = 1): a reply with no answer has no confidence to
calibrate, and counting it as a wrong answer rewards garbage text, whose token probabilities are low (a run that
did so wrote backslashes before its box under noise). ``unparsed="wrong"`` keeps that rule (z = 0) for comparison.

``anchor_kl_weight`` anchors the clean images: it adds ``w_a * KL(policy || reference)`` (TRL's per-token k3
estimator, the one its ``beta`` uses, against the same reference model) over the completions whose original is the
clean image (``catts.train.pairs.is_clean_original``), on top of GRPO's own KL on every completion. The calibration
loss is learned on degraded originals; without an anchor its lesson (answer with less certainty than the
description) spreads to clean images, where the model then stops copying its own description (docs/cdrl.md, run P).
It needs GRPO's ``beta > 0`` (TRL loads the reference model only then).

``calibrate_clean: False`` leaves the completions of clean originals out of the Brier loss (the anchor's side of
the split: degraded originals teach the confidence, clean ones are held where they were). In docs/cdrl.md (run X)
that kept clean accuracy and lost most of the calibration: the loss needs the clean side of the contrast.

``grpo_weight: 0`` keeps only this loss (the KL penalty goes with the GRPO loss): a supervised calibration run on
the same rollouts, data and steps, the supervised baseline of docs/cdrl.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from catts.train.pairs import is_clean_original

PATHWISE_CONFIDENCES = ("trace_prob", "sequence_prob", "answer_prob")
UNPARSED_RULES = ("skip", "wrong")


def completion_probability(per_token_logps: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, T) log p of each completion token and its 0/1 mask -> (B,) confidence, differentiable.

    ``trace_prob``: exp(sum_t m_t log p_t / sum_t m_t); ``sequence_prob``: exp(sum_t m_t log p_t); ``answer_prob``
    is ``sequence_prob`` over a mask of the answer's own tokens (the caller passes that mask).
    """
    if kind not in PATHWISE_CONFIDENCES:
        raise ValueError(f"the pathwise calibration loss takes one of {PATHWISE_CONFIDENCES}, got {kind!r}")
    mask = mask.to(per_token_logps.dtype)
    total = (per_token_logps * mask).sum(-1)
    if kind == "trace_prob":
        total = total / mask.sum(-1).clamp(min=1.0)
    return total.exp()


def brier_loss(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """mean_i (c_i - z_i)^2."""
    return ((confidence - correct.to(confidence.dtype)) ** 2).mean()


def clean_kl(per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor, mask: torch.Tensor,
             clean: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens of the clean rows of the k3 estimate of KL(policy || reference):
    exp(r - l) - (r - l) - 1 per token, l and r the policy's and the reference's log-probabilities (0 if no row is
    clean)."""
    mask = mask.to(per_token_logps.dtype) * clean.to(per_token_logps.dtype)[:, None]
    diff = ref_per_token_logps - per_token_logps
    per_token = torch.exp(diff) - diff - 1
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def answer_mask(steps: list | None, completion_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask of each completion's answer tokens from their [start, end) steps (None: no answer)."""
    if steps is None or len(steps) != completion_ids.size(0):
        raise RuntimeError("answer_prob needs the rollout's answer token steps of every completion "
                           "(catts.train.rollout records them)")
    mask = torch.zeros_like(completion_ids, dtype=torch.long)
    for i, span in enumerate(steps):
        if span is not None:
            mask[i, span[0]:span[1]] = 1
    return mask


class RewardTap:
    """Wraps the format and output rewards: keeps their last lists of 0/1 scores, in the order TRL handed the
    completions."""

    def __init__(self):
        self.last: dict[str, list[float]] = {}

    def wrap(self, func: Callable, name: str) -> Callable:
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            out = func(*args, **kwargs)
            self.last[name] = [float(x) for x in out]
            return out
        return wrapped

    def take(self, name: str, n: int) -> list[float]:
        values = self.last.pop(name, None)
        if values is None or len(values) != n:
            raise RuntimeError(f"the {name} reward scored {0 if values is None else len(values)} completions, "
                               f"the batch holds {n}")
        return values


def make_trainer_class():
    """``CDRLTrainer``, built on import of TRL (which the ``train`` extra installs)."""
    import trl

    class CDRLTrainer(trl.GRPOTrainer):
        """GRPOTrainer plus the pathwise calibration loss (module docstring). ``calibration_loss_weight`` 0 is
        plain GRPO."""

        def __init__(self, *args, tap: RewardTap, confidence_kind: str = "trace_prob",
                     calibration_loss_weight: float = 0.0, grpo_weight: float = 1.0, unparsed: str = "skip",
                     anchor_kl_weight: float = 0.0, calibrate_clean: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            if unparsed not in UNPARSED_RULES:
                raise ValueError(f"unparsed must be one of {UNPARSED_RULES}, got {unparsed!r}")
            self.unparsed = unparsed
            if calibration_loss_weight and confidence_kind not in PATHWISE_CONFIDENCES:
                raise ValueError(f"calibration_loss_weight needs confidence_kind in {PATHWISE_CONFIDENCES}, "
                                 f"got {confidence_kind!r}")
            if calibration_loss_weight and abs(float(self.args.temperature) - 1.0) > 1e-9:
                raise ValueError("calibration_loss_weight needs temperature 1: TRL's log-probabilities are "
                                 f"tempered, the probe's confidences are not (got {self.args.temperature})")
            if grpo_weight == 0 and not calibration_loss_weight:   # the anchor alone holds the reference still
                raise ValueError("grpo_weight 0 with no calibration loss trains nothing")
            if anchor_kl_weight and not self.beta:
                raise ValueError("anchor_kl_weight needs GRPO's beta > 0 (TRL keeps a reference model only then)")
            self.anchor_kl_weight, self.calibrate_clean = float(anchor_kl_weight), bool(calibrate_clean)
            self.tap, self.confidence_kind = tap, confidence_kind
            self.calibration_loss_weight, self.grpo_weight = float(calibration_loss_weight), float(grpo_weight)
            self._live_logps = None

        def _get_train_sampler(self, dataset=None):
            """TRL's sampler, its shuffle seeded by (seed + epoch): TRL's draws each epoch's order from one
            generator, so a run resumed in epoch e (the Trainer calls ``set_epoch(e)`` and skips the epoch's
            finished batches) would shuffle as in epoch 0. Epoch 0's order is TRL's own."""
            sampler = super()._get_train_sampler(dataset)
            if getattr(sampler, "shuffle", False) and getattr(sampler, "generator", None) is not None:
                base_seed = sampler.seed if sampler.seed is not None else 0
                sampler.set_epoch = lambda epoch: sampler.generator.manual_seed(base_seed + int(epoch))
            return sampler

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Resume the weights through ``from_pretrained``: transformers 5 saves a VLM such as Llava or
            Qwen2.5-VL under its checkpoint key layout, and the Trainer's own resume loads that state dict as it
            is (missing and unexpected keys, a warning, and the weights left at the start's). Adapters, FSDP and
            DeepSpeed checkpoints keep the Trainer's own path."""
            model = self.model if model is None else model
            folder = Path(resume_from_checkpoint)
            if (self.is_fsdp_enabled or self.is_deepspeed_enabled or not any(folder.glob("model*.safetensors"))
                    or hasattr(model, "peft_config")):
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            unwrapped = self.accelerator.unwrap_model(model)
            dtype = next(unwrapped.parameters()).dtype
            saved = type(unwrapped).from_pretrained(folder, dtype=dtype)
            unwrapped.load_state_dict(saved.state_dict(), strict=True)
            del saved

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            n, device = output["completion_ids"].size(0), output["completion_ids"].device
            output["correct"] = torch.tensor(self.tap.take("output", n), device=device)
            output["well_formed"] = torch.tensor(self.tap.take("format", n), device=device)
            if self.anchor_kl_weight or not self.calibrate_clean:
                if len(inputs) != n:
                    raise RuntimeError(f"{len(inputs)} rows gave {n} completions")
                output["clean_original"] = torch.tensor(
                    [is_clean_original(str(x.get("original_level", "0"))) for x in inputs], device=device)
            if self.confidence_kind == "answer_prob":
                output["answer_mask"] = answer_mask(getattr(self.rollout_func, "last_answer_steps", None),
                                                    output["completion_ids"])
            return output

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if torch.is_grad_enabled():
                self._live_logps = out[0]
            return out

        def _compute_loss(self, model, inputs):
            self._live_logps = None
            loss = super()._compute_loss(model, inputs)
            mode = "train" if self.model.training else "eval"
            normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = self.grpo_weight * loss
            if self.anchor_kl_weight:
                anchor = clean_kl(self._live_logps, inputs["ref_per_token_logps"], inputs["completion_mask"],
                                  inputs["clean_original"])
                self._metrics[mode]["cdrl/clean_kl"].append(self.accelerator.gather(anchor.detach()).mean().item())
                loss = loss + self.anchor_kl_weight * anchor / normalizer
            if not self.calibration_loss_weight:
                return loss
            mask = inputs["answer_mask"] if self.confidence_kind == "answer_prob" else inputs["completion_mask"]
            confidence = completion_probability(self._live_logps, mask, self.confidence_kind)
            answered = inputs["well_formed"] > 0
            if self.unparsed == "wrong":
                answered = torch.ones_like(answered)
            if self.confidence_kind == "answer_prob":  # no answer tokens, no answer probability
                answered = answered & (mask.sum(-1) > 0)
            if not self.calibrate_clean:
                answered = answered & ~inputs["clean_original"]
            # a reply without an answer has no confidence to calibrate (the format reward deals with it)
            cal = brier_loss(confidence[answered], inputs["correct"][answered]) if answered.any() \
                else confidence.sum() * 0.0
            self._metrics[mode]["cdrl/calibration_loss"].append(self.accelerator.gather(cal.detach()).mean().item())
            self._metrics[mode]["cdrl/live_confidence"].append(
                self.accelerator.gather(confidence.detach().mean()).mean().item())
            return loss + self.calibration_loss_weight * cal / normalizer

    return CDRLTrainer
