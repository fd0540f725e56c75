"""The transformers backend: any ``AutoModelForImageTextToText`` checkpoint with its processor.

Generation runs through ``model.generate`` (it knows every architecture's caches and position
schemes, e.g. Qwen2.5-VL's M-RoPE), greedy at its level, with one logits processor of ours as the
last step. That processor records the raw top-k log-probabilities and chooses each row's token: the
argmax, or an inverse-CDF draw from the tempered / top-k / top-p distribution with a uniform from
that row's own generator, seeded by (seed, prompt key, sample index). So a trace depends on its
prompt and seed, not on which other prompts shared its batch: exactly in float32; in bf16/fp16 the
logits of different batch shapes differ by rounding, so an exact tie can break differently.
Log-probabilities and confidences are computed in float32 from the logits whatever the model's
dtype. Generation settings are passed explicitly so that a checkpoint's own defaults (e.g. a
repetition penalty) never touch the logits. Per-image crop stacks of different lengths (Idefics3,
SmolVLM) are padded with all-zero crops, which those models drop.

Prompts are encoded one at a time by the processor and left-padded together, which also lets a
continuation be appended for teacher-forced scoring. Rotary position embeddings are relative, so
left padding shifts no attention score.

Contrastive decoding (``contrastive_generate``) is one ``model.generate`` over paired rows, the
prompt with the original image and with the noised one, ``catts.models.contrastive.PairContrast``
choosing each pair's token from both rows' distributions. Teacher forcing (``score``,
``score_candidates``, ``next_token_logprobs``) lives in ``catts.models.hf_score``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import (AutoModelForImageTextToText, AutoProcessor, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList)

from catts.models.backend import (Capabilities, ContrastiveParams, Prompt, SamplingParams, TopPieces, Trace, fit_image,
                                  sample_seed)
from catts.models.contrastive import PairContrast
from catts.models.hf_score import TeacherForcing

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """The concrete device and dtype for ``device``/``dtype`` ("auto": CUDA with bf16 if present, else CPU fp32).

    Raises ValueError with one clear line for an unknown or unavailable device or dtype, so a command
    can check them before it loads anything.
    """
    if not DEVICE_PATTERN.match(device):
        raise ValueError(f"--device {device!r}: expected auto, cpu, mps, cuda or cuda:N")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__})")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: MPS is not available here")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected auto or one of {', '.join(DTYPES)}")
    return device, dtype


def identity(model: str, device: str, dtype: str, max_pixels: int | None) -> dict:
    """A transformers backend's run identity from its settings (``device``/``dtype`` already resolved)."""
    return {"model": str(model), "backend": "transformers", "dtype": dtype, "device": device.partition(":")[0],
            "max_pixels": max_pixels}


class _RowSampler(LogitsProcessor):
    """Records raw top-k log-probs and picks each row's next token with the row's own generator."""

    def __init__(self, params: SamplingParams, generators: list[torch.Generator] | None,
                 never: Sequence[int] = ()):
        self.params = params
        self.generators = generators
        self.never = list(never)
        self.steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        top_vals, top_ids = logp.topk(self.params.top_logprobs, dim=-1)
        # choose among the tokens a reply may hold (the recorded distribution stays the raw one)
        allowed = logp.index_fill(1, torch.tensor(self.never, device=logp.device), float("-inf")) if self.never \
            else logp
        if self.params.greedy:
            chosen = allowed.argmax(dim=-1)
        else:
            chosen = self._sample(allowed)
        self.steps.append((top_vals.cpu(), top_ids.cpu(), chosen.cpu(), logp.gather(1, chosen[:, None])[:, 0].cpu()))
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, chosen[:, None], 0.0)
        return forced

    def _sample(self, logp: torch.Tensor) -> torch.Tensor:
        p = self.params
        logits = logp / p.temperature
        if p.top_k:
            kth = logits.topk(min(p.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        order = probs.argsort(dim=-1, descending=True, stable=True)
        sorted_probs = probs.gather(1, order)
        if p.top_p < 1.0:
            # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= p.top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        cdf = sorted_probs.double().cumsum(-1)
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators]).to(cdf.device)
        pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=cdf.shape[-1] - 1)
        return order.gather(1, pos)[:, 0]


def _pad_per_sample(values: list) -> list:
    """Right-pad per-sample tensors ``[1, ...]`` whose other dims differ to a common shape, with zeros.

    One processor call pads this way within its own batch: Idefics3 / SmolVLM return
    ``pixel_values`` ``[1, n_crops, C, H, W]`` (the crop count depends on the image's size and aspect)
    and ``pixel_attention_mask`` ``[1, n_crops, H, W]``; an all-zero crop is a padding image that the
    model drops, and zero mask entries are padding pixels. Tensors without a batch dim of 1 (e.g.
    Qwen2.5-VL's flattened patches ``[n_patches, D]`` with ``image_grid_thw``), or whose shapes agree,
    are returned as they are: those are concatenated along dim 0.
    """
    if not all(isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] == 1 for v in values):
        return values
    if len({v.ndim for v in values}) != 1 or len({tuple(v.shape) for v in values}) == 1:
        return values
    target = [max(v.shape[d] for v in values) for d in range(values[0].ndim)]
    out = []
    for v in values:
        if list(v.shape) != target:
            padded = v.new_zeros(target)
            padded[tuple(slice(0, n) for n in v.shape)] = v
            v = padded
        out.append(v)
    return out


OPTIONAL_PACKAGES = ("torchvision", "num2words", "timm", "av")


def _missing_package(path: Path, error: ImportError) -> str:
    text = str(error).strip()
    name = next((m for m in OPTIONAL_PACKAGES if m in text.lower()), None)
    hint = f"pip install {name} (the build for your torch)" if name else "install the package it names"
    return f"{path}: its processor needs {name or 'a package'} that is not installed; {hint}. ({text.splitlines()[0]})"


class TransformersBackend(TeacherForcing):
    """Local model through transformers. ``model`` is a folder or an embedded name (``tiny``, ``tiny-expert``)."""

    capabilities = Capabilities(contrastive="exact", full_distribution=True, prefix_cache=True,
                                teacher_forcing=True)

    def __init__(self, model: str | Path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
                 max_pixels: int | None = 1024 * 1024, attn_implementation: str | None = None):
        from catts.models import resolve_model_path

        path = resolve_model_path(model)
        self.name = str(model)
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        torch_dtype = DTYPES[self.dtype]
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        tf_logger = logging.getLogger("transformers")
        level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)  # e.g. "CLIPImageProcessor requires torchvision; falling back"
        try:
            try:
                self.processor = AutoProcessor.from_pretrained(path)
            except ImportError as e:  # transformers' message runs over many lines: one line naming the package
                raise ImportError(_missing_package(path, e)) from e
            kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
            self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, **kwargs)
        finally:
            tf_logger.setLevel(level)
        self.model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.eos_ids = self._eos_ids()
        self._pieces: dict[int, str] = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.never_sample = self._placeholder_ids()
        self._setup_scoring()

    @classmethod
    def from_model(cls, model, processor, *, name: str = "live", batch_size: int = 16,
                   max_pixels: int | None = 1024 * 1024) -> "TransformersBackend":
        """A backend around a live model and its processor (e.g. a trainer's policy), sharing them: nothing is
        loaded, the model is neither moved nor switched to eval mode (a training step's dropout stays as the
        trainer set it), so generation, scoring and confidences are the same code as in probe and CA-TTS."""
        self = cls.__new__(cls)
        param = next(model.parameters())
        self.name, self.model, self.processor = name, model, processor
        self.device = str(param.device)
        self.dtype = next((k for k, v in DTYPES.items() if v == param.dtype), str(param.dtype))
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.eos_ids = self._eos_ids()
        self._pieces = {}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.never_sample = self._placeholder_ids()
        self._setup_scoring()
        return self

    def _placeholder_ids(self) -> list[int]:
        """Token ids that stand for images or videos in a prompt (the config's image/video token ids and vision
        start marker). A reply never holds one: sampled at a high temperature, it would make the next forward
        pass over prompt + reply (a trainer's, a scorer's) expect an image that is not there."""
        ids = set()
        for cfg in (self.model.config, getattr(self.model.config, "text_config", None)):
            for attr in ("image_token_id", "image_token_index", "video_token_id", "vision_start_token_id"):
                v = getattr(cfg, attr, None) if cfg is not None else None
                if isinstance(v, int) and v >= 0:
                    ids.add(v)
        return sorted(ids)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        if not ids:
            raise ValueError(f"{self.name}: no end-of-sequence token in its generation config or tokenizer")
        return ids

    @property
    def identity(self) -> dict:
        """What of this backend changes an answer (part of every run's identity); not the batch size."""
        return identity(self.name, self.device, self.dtype, self.max_pixels)

    # ---- encoding -------------------------------------------------------------------------
    def chat_text(self, prompt: Prompt) -> str:
        """The prompt through the model's chat template; a template that drops a system message is an error."""
        text = self.processor.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
        if prompt.system and prompt.system not in text:
            raise ValueError(f"{self.name}: its chat template drops system messages; put the instruction in the "
                             "user text instead")
        return text

    def _encode(self, prompts: Sequence[Prompt], suffixes: Sequence[Sequence[int]] | None = None) -> dict:
        """Encode each prompt alone, append its suffix ids, left-pad; other tensors are concatenated."""
        rows, extras, per_token = [], {}, set()
        for i, prompt in enumerate(prompts):
            images = [fit_image(im, self.max_pixels) for im in prompt.images]
            enc = self.processor(text=[self.chat_text(prompt)], images=[images] if images else None,
                                 return_tensors="pt")
            ids = enc.pop("input_ids")[0].tolist()
            enc.pop("attention_mask", None)
            suffix = list(suffixes[i]) if suffixes is not None else []
            rows.append(ids + suffix)
            for k, v in enc.items():
                if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] == 1 and v.shape[1] == len(ids):
                    per_token.add(k)  # e.g. token_type_ids: extend over the suffix with zeros
                    v = torch.cat([v, v.new_zeros((1, len(suffix)) + tuple(v.shape[2:]))], dim=1)
                extras.setdefault(k, []).append(v)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, length - len(r):] = torch.tensor(r)
            mask[i, length - len(r):] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        for k, vs in extras.items():
            if k in per_token:
                vs = [torch.cat([v.new_zeros((1, length - v.shape[1]) + tuple(v.shape[2:])), v], dim=1) for v in vs]
            else:
                vs = _pad_per_sample(vs)
            batch[k] = torch.cat(vs, dim=0)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _chunks(self, n: int):
        for start in range(0, n, self.batch_size):
            yield range(start, min(n, start + self.batch_size))

    # ---- protocol -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Trace]]:
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        out: list[list[Trace]] = [[] for _ in prompts]
        config, stop_kwargs = self._generation_config(params.max_new_tokens, params.stop)
        for chunk in self._chunks(len(rows)):
            batch_rows = [rows[r] for r in chunk]
            enc = self._encode([prompts[i] for i, _ in batch_rows])
            generators = None
            if not params.greedy:
                generators = [torch.Generator().manual_seed(sample_seed(params.seed, prompts[i].key,
                                                                        params.first_index + j))
                              for i, j in batch_rows]
            sampler = _RowSampler(params, generators, self.never_sample)
            self.model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([sampler]),
                                **stop_kwargs)
            for row, (i, _) in enumerate(batch_rows):
                out[i].append(self._trace(sampler.steps, row, params.stop))
        return out

    def _generation_config(self, max_new_tokens: int, stop: Sequence[str]) -> tuple[GenerationConfig, dict]:
        """Greedy at transformers' level (our processor chooses), none of the checkpoint's defaults."""
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            pad_token_id=self.pad_id, eos_token_id=self.eos_ids, stop_strings=list(stop) or None)
        return config, ({"tokenizer": self.tokenizer} if stop else {})  # rows end early; _trace cuts exactly

    @torch.no_grad()
    def contrastive_generate(self, prompts: Sequence[Prompt], noised: Sequence[Prompt],
                             params: ContrastiveParams) -> list[Trace]:
        """Greedy contrastive decoding of each prompt against its noised twin, exact (see the module docstring).

        ``batch_size`` counts rows, so a call holds ``max(1, batch_size // 2)`` pairs.
        """
        if len(prompts) != len(noised):
            raise ValueError(f"{len(prompts)} prompts but {len(noised)} noised prompts")
        config, stop_kwargs = self._generation_config(params.max_new_tokens, params.stop)
        pairs = max(1, self.batch_size // 2)
        out = []
        for start in range(0, len(prompts), pairs):
            chunk = range(start, min(len(prompts), start + pairs))
            enc = self._encode([q for i in chunk for q in (prompts[i], noised[i])])
            contrast = PairContrast(params)
            self.model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([contrast]),
                                **stop_kwargs)
            for k in range(len(chunk)):
                trace = self._trace(contrast.steps, k, params.stop)
                trace.meta.update(contrastive="exact", alpha=params.alpha, beta=params.beta,
                                  contrastive_scores=[float(s[k]) for s in contrast.scores[:trace.num_tokens]])
                out.append(trace)
        return out

    def _trace(self, steps, row: int, stop: Sequence[str] = ()) -> Trace:
        ids, lps, tops, top_ids = [], [], [], []
        finish = "length"
        for top_vals, top_idx, chosen, chosen_lp in steps:
            tok = int(chosen[row])
            ids.append(tok)
            lps.append(float(chosen_lp[row]))
            tops.append(top_vals[row].numpy())
            top_ids.append(top_idx[row].numpy())
            if tok in self.eos_ids:
                finish = "stop"
                break
        pieces = self.token_pieces(ids)
        if stop:  # the first token whose text completes a stop string ends the trace
            text = ""
            for k, piece in enumerate(pieces):
                text += piece
                if any(s in text[-(len(piece) + max(map(len, stop))):] for s in stop):
                    ids, lps, tops, top_ids, pieces, finish = (ids[:k + 1], lps[:k + 1], tops[:k + 1],
                                                               top_ids[:k + 1], pieces[:k + 1], "stop")
                    break
        return self.make_trace(ids, np.array(lps, dtype=np.float32), np.stack(tops).astype(np.float32),
                                np.stack(top_ids).astype(np.int64), finish, pieces)

    def make_trace(self, ids: list[int], logprobs, top_logprobs, top_ids, finish: str,
                   pieces: list[str] | None = None) -> Trace:
        """A Trace of token ``ids`` with their log-probabilities ([T], [T, k], [T, k]), text decoded here."""
        return Trace(text=self.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids, logprobs=logprobs,
                     top_logprobs=top_logprobs, top_ids=top_ids, finish_reason=finish,
                     tokens=self.token_pieces(ids) if pieces is None else pieces,
                     top_tokens=TopPieces(top_ids, self._piece), meta={"vocab": self.vocab_fingerprint})

    def _piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id])
        return self._pieces[token_id]

    def token_pieces(self, ids: Sequence[int], context: int = 6) -> list[str]:
        """The text each token adds to the decoded string.

        Decoding a token alone loses context (SentencePiece drops a leading space, byte-level BPE
        splits multi-byte characters), so each piece is the difference of two decodes over a short
        window of preceding tokens. An incomplete UTF-8 character is held back until its last byte.
        """
        ids = list(ids)
        pieces, pending_from = [], None
        for k in range(len(ids)):
            lo = max(0, (k if pending_from is None else pending_from) - context)
            before = self.tokenizer.decode(ids[lo:pending_from if pending_from is not None else k],
                                           skip_special_tokens=True)
            after = self.tokenizer.decode(ids[lo:k + 1], skip_special_tokens=True)
            if after.endswith("\ufffd"):
                pieces.append("")
                pending_from = k if pending_from is None else pending_from
                continue
            pieces.append(after[len(before):] if after.startswith(before) else after)
            pending_from = None
        return pieces
