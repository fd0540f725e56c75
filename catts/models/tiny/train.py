"""Train an embedded tiny model from scratch on the embedded train splits (``catts tiny train``).

Supervised next-token training on ``rationale + \\boxed{answer}`` targets: the rationale says what
the image shows ("I see: red circle top left, ..."), so traces have several tokens and the answer
follows from what was seen. The base model sees clean images only: whatever it does under
degradation is what training gives, nothing is trained in or out. The expert also sees degraded
copies (``degrade_prob``), which makes it the stronger voter/critic on poor images.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from catts.data import Sample, load_embedded
from catts.data.shapes import describe
from catts.models.tiny.build import (IMAGE_TOKEN, SPECS, TinySpec, build_model, build_processor,
                                     build_tokenizer, num_image_tokens)
from catts.prompts import build_prompt


@dataclass
class TrainConfig:
    name: str = "tiny"
    steps: int = 8000
    batch_size: int = 64
    lr: float = 8e-4
    min_lr: float = 5e-5
    warmup: int = 300
    weight_decay: float = 0.01
    easyvqa_share: float = 0.4     # share of each batch drawn from easyvqa, the rest from shapes
    degrade_prob: float = 0.0      # expert: share of images replaced by a randomly degraded copy
    eval_every: int = 500
    seed: int = 0
    threads: int = 0               # 0 = torch default
    max_samples: int = 0           # >0: train on the first N samples of each set (smoke tests)
    init_from: str = ""            # continue from a saved tiny model folder (its tokenizer and weights)
    stop_after: int = 0            # >0: stop after this many steps (the lr schedule still spans ``steps``)
    explain: bool = True           # say the step from scene to answer before the answer (stage 2)
    spec: TinySpec = field(default_factory=TinySpec)


def rationale(sample: Sample, explain: bool = True) -> str:
    """What the image shows, from the sample's metadata (the target's reasoning part)."""
    meta = sample.metadata
    seen = describe(meta["objects"]) if "objects" in meta else f"I see: {meta['color']} {meta['shape']}."
    return f"{seen} {meta['explanation']}" if explain and meta.get("explanation") else seen


def target_text(sample: Sample, explain: bool = True) -> str:
    """Rationale, then the boxed answer; a multiple-choice answer is boxed as its option text.

    Why the option text and not the letter: a model this small learns to say what it sees and
    which object the question is about, but not (within our training budget) the extra look-up
    from an option's text to its letter; ``catts.answers`` maps a boxed option text to its letter
    exactly (extraction path ``boxed_option_text``), so nothing is guessed. Real models answer
    with the letter, as the prompt asks.
    """
    text = rationale(sample, explain)
    answer = sample.answer
    if sample.answer_type == "choice" and explain:
        answer = sample.options[ord(sample.answer) - ord("A")]
    return f"{text} \\boxed{{{answer}}}"


def chat_prompt(processor, sample: Sample) -> str:
    """The full prompt string, chat template applied, exactly as the backends build it."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": build_prompt(sample)}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class Encoded:
    """Token ids, label starts and preprocessed images of a list of samples, built once."""

    def __init__(self, samples: list[Sample], processor, spec: TinySpec, explain: bool = True):
        tok = processor.tokenizer
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        n_img = num_image_tokens(spec)
        self.samples = samples
        self.ids, self.starts = [], []
        for s in samples:
            prompt = tok(chat_prompt(processor, s), add_special_tokens=False)["input_ids"]
            k = prompt.index(image_id)
            prompt = prompt[:k] + [image_id] * n_img + prompt[k + 1:]
            target = tok(target_text(s, explain), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            self.ids.append(prompt + target)
            self.starts.append(len(prompt))
        keys, self.image_index, originals = {}, [], []
        for s in samples:
            key = id(s.images[0]) if not isinstance(s.images[0], str) else s.images[0]
            if key not in keys:
                keys[key] = len(originals)
                originals.append(s.load_images()[0].convert("RGB"))
            self.image_index.append(keys[key])
        self.originals = originals
        chunks = [processor.image_processor(originals[i:i + 512], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(originals), 512)]
        self.pixels = torch.cat(chunks)
        self.pad_id = tok.pad_token_id

    def batch(self, idx: np.ndarray, processor=None, degrade_prob: float = 0.0, rng=None):
        length = max(len(self.ids[i]) for i in idx)
        input_ids = torch.full((len(idx), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(idx), length), -100, dtype=torch.long)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = torch.tensor(self.ids[i])
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
            labels[row, self.starts[i]:len(ids)] = ids[self.starts[i]:]
        pixels = self.pixels[[self.image_index[i] for i in idx]].clone()
        if degrade_prob > 0:
            pixels = self._degrade(idx, pixels, processor, degrade_prob, rng)
        return {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pixels, "labels": labels}

    def _degrade(self, idx, pixels, processor, prob, rng):
        from catts.perception.degrade import degrade

        kinds = [("diffusion", lambda: int(rng.integers(0, 1000))), ("gaussian_noise", lambda: int(rng.integers(1, 6))),
                 ("blur", lambda: int(rng.integers(1, 6))), ("jpeg", lambda: int(rng.integers(1, 6))),
                 ("lowres", lambda: int(rng.integers(1, 6)))]
        for row, i in enumerate(idx):
            if rng.random() < prob:
                kind, level = kinds[int(rng.integers(len(kinds)))]
                img = degrade(self.originals[self.image_index[i]], kind, level(), seed=int(rng.integers(1 << 30)))
                pixels[row] = processor.image_processor([img], return_tensors="pt")["pixel_values"][0]
        return pixels


@torch.no_grad()
def teacher_forced_exact(model, enc: Encoded, n: int = 256, batch_size: int = 64) -> float:
    """Share of samples whose whole target is the argmax under teacher forcing (= greedy reproduces it)."""
    model.eval()
    hits = 0
    idx = np.arange(min(n, len(enc.ids)))
    for k in range(0, len(idx), batch_size):
        b = enc.batch(idx[k:k + batch_size])
        logits = model(**{k2: v for k2, v in b.items() if k2 != "labels"}).logits
        pred = logits[:, :-1].argmax(-1)
        gold = b["labels"][:, 1:]
        ok = ((pred == gold) | (gold == -100)).all(-1)
        hits += int(ok.sum())
    model.train()
    return hits / len(idx)


def train_tiny(config: TrainConfig, out: str | Path, log=print) -> Path:
    """Train one tiny model and save it (model, tokenizer, processor, train_log.json) into ``out``."""
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    t0 = time.time()
    cap = slice(0, config.max_samples or None)
    easy, shapes = load_embedded("easyvqa", "train")[cap], load_embedded("shapes", "val" if config.max_samples else "train")[cap]
    val_easy, val_shapes = load_embedded("easyvqa", "val")[cap], load_embedded("shapes", "val")[cap]
    if config.init_from:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(config.init_from)
        model = AutoModelForImageTextToText.from_pretrained(config.init_from)
    else:
        corpus = [build_prompt(s) + "\n" + target_text(s, config.explain) for s in easy[::4] + shapes[::2]]
        tokenizer = build_tokenizer(corpus, config.spec.vocab_size)
        processor = build_processor(tokenizer, config.spec)
        model = build_model(tokenizer, config.spec, seed=config.seed)
    sets = {name: Encoded(list(s), processor, config.spec, config.explain) for name, s in
            [("easyvqa", easy), ("shapes", shapes), ("val_easyvqa", val_easy[::9]), ("val_shapes", val_shapes)]}
    log(f"[{config.name}] data ready in {time.time() - t0:.0f}s; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(config.seed)
    n_easy = int(round(config.batch_size * config.easyvqa_share))
    history = []
    model.train()
    t_train = time.time()
    last = config.stop_after or config.steps
    for step in range(1, last + 1):
        lr = _lr(step, config)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = []
        for name, n in (("easyvqa", n_easy), ("shapes", config.batch_size - n_easy)):
            enc = sets[name]
            batch = enc.batch(rng.integers(0, len(enc.ids), n), processor, config.degrade_prob, rng)
            loss = model(**batch).loss * n / config.batch_size
            loss.backward()
            losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % config.eval_every == 0 or step == last:
            row = {"step": step, "loss": round(sum(losses), 4), "lr": lr, "seconds": round(time.time() - t_train, 1),
                   "val_easyvqa": teacher_forced_exact(model, sets["val_easyvqa"]),
                   "val_shapes": teacher_forced_exact(model, sets["val_shapes"])}
            history.append(row)
            log(f"[{config.name}] " + json.dumps(row))
            _save(model, processor, out)  # a checkpoint at every evaluation
    _save(model, processor, out)
    cfg = asdict(config)
    (out / "train_log.json").write_text(json.dumps(
        {"config": cfg, "train_seconds": round(time.time() - t_train, 1), "total_seconds": round(time.time() - t0, 1),
         "torch": torch.__version__, "threads": torch.get_num_threads(), "history": history}, indent=1))
    return out


def _save(model, processor, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _lr(step: int, c: TrainConfig) -> float:
    if step <= c.warmup:
        return c.lr * step / c.warmup
    p = (step - c.warmup) / max(1, c.steps - c.warmup)
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * p))


def recipe(name: str) -> list[TrainConfig]:
    """The stages that made the shipped model ``name``; each stage starts from the previous one.

    ``tiny``: stage 1 learns to see (targets without the explanation step; an 8,000-step cosine
    schedule stopped after 4,400 steps), stage 2 learns to answer from what it saw (targets with
    the explanation, 3,000 steps, shapes-heavy batches). Measured timings are in docs/models.md.
    """
    if name == "tiny":
        return [TrainConfig(name="tiny-stage1", spec=SPECS["tiny"], explain=False, stop_after=4400),
                TrainConfig(name="tiny", spec=SPECS["tiny"], steps=2500, lr=6e-4, warmup=100, easyvqa_share=0.35,
                            eval_every=250)]
    raise ValueError(f"no recipe for {name!r}; embedded models: tiny, tiny-expert")


def train_recipe(name: str, out: str | Path, log=print, **overrides) -> Path:
    """Run every stage of the shipped model ``name``, chaining them through ``out``/stageN folders.

    ``tiny``: the stages of ``recipe("tiny")``, then its CA-TTS roles (``train_roles`` base: taking a
    critique, vision frozen). ``tiny-expert``: ``train_roles`` expert from scratch (a GPU takes minutes,
    two CPU cores many hours). ``steps`` overrides every stage's step count.
    """
    from catts.models.tiny.train_roles import recipe as roles_recipe, train_roles

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(out)
    if name == "tiny-expert":
        config = roles_recipe("expert")
        config.steps = overrides.get("steps") or config.steps
        return train_roles(config, out, device=device, workers=max(1, (os.cpu_count() or 2) - 1), log=log)
    stages = recipe(name)
    previous = ""
    for k, config in enumerate(stages, 1):
        for key, value in overrides.items():
            setattr(config, key, value)
        config.init_from = config.init_from or previous
        target = out.parent / f"{out.name}-stage{k}"
        train_tiny(config, target, log=log)
        previous = str(target)
    config = roles_recipe("base")
    config.init_from = previous
    config.steps = overrides.get("steps") or config.steps
    return train_roles(config, out, device=device, workers=max(1, (os.cpu_count() or 2) - 1), log=log)
