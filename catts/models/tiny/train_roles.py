"""Train the tiny models' CA-TTS roles (``catts.models.tiny.roles``) on CPU or one GPU.

Everything a step needs lives in tensors on the device: every example's tokens (padded once),
its label start, and for every unique image its clean pixels plus ``variants`` degraded copies,
made once up front (in worker processes) with the same ``degrade`` and image processor that
inference uses. A step only indexes them, so a GPU is not starved by Python image work.

Run as a module: ``python -m catts.models.tiny.train_roles expert OUT`` (a stronger expert from
scratch) or ``... base OUT --init catts/models/tiny/weights/tiny`` (the base, fine-tuned to take
critiques). ``--steps``/``--batch-size``/``--device`` override the recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from catts.data import Sample, load_embedded
from catts.models.tiny.build import IMAGE_TOKEN, TinySpec, build_model, build_processor, build_tokenizer, \
    num_image_tokens
from catts.models.tiny.roles import Example, expert_examples, reflection_examples, answer_example

EXPERT_SPEC = TinySpec(vision_hidden=128, vision_layers=3, text_hidden=224, text_layers=6, heads=4, vocab_size=640)


@dataclass
class RolesConfig:
    role: str = "expert"            # expert | base
    steps: int = 4123
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup: int = 400
    weight_decay: float = 0.01
    degrade_prob: float = 0.7       # share of degradable examples shown a degraded copy
    variants: int = 12              # degraded copies made per unique image
    answer_share: float = 0.0       # base: share of plain answer examples (clean images)
    seed: int = 0
    init_from: str = ""
    max_samples: int = 0            # >0: first N samples per dataset (smoke tests)
    eval_every: int = 1000
    max_minutes: float = 0.0        # >0: after 200 steps, shorten the schedule to end within this budget
    freeze_vision: bool = False     # base: the vision tower and projector stay as they are (it sees as before)
    spec: TinySpec = field(default_factory=lambda: EXPERT_SPEC)


def recipe(role: str) -> RolesConfig:
    """The shipped models' settings: their step counts are where the GPU run's time budget shortened the
    schedules to (12,000 and 3,000 planned; ``train_log.json`` beside the weights records it)."""
    if role == "expert":
        return RolesConfig(role="expert")
    if role == "base":
        return RolesConfig(role="base", steps=1692, batch_size=128, lr=2e-4, warmup=100, degrade_prob=0.0,
                           answer_share=0.75, freeze_vision=True)
    raise ValueError(f"role {role!r}: expert or base")


# ---------------------------------------------------------------- images: clean + degraded variants

_PROCESSOR = None


def _init_worker(processor_dir: str) -> None:
    global _PROCESSOR
    from transformers import AutoProcessor
    torch.set_num_threads(1)
    _PROCESSOR = AutoProcessor.from_pretrained(processor_dir)


def _variants(job: tuple) -> np.ndarray:
    """[1 + n, 3, H, W] float16: the clean image, then n degraded copies (kind and level drawn per copy)."""
    from catts.perception.degrade import degrade

    image, n, seed = job
    rng = random.Random(seed)
    images = [image]
    for k in range(n):
        r = rng.random()
        if r < 0.7:
            kind, level = "diffusion", rng.randrange(0, 1000)
        else:
            kind, level = rng.choice(["gaussian_noise", "blur", "jpeg", "lowres"]), rng.randint(1, 5)
        images.append(degrade(image, kind, level, seed=seed, key=str(k)))
    return _PROCESSOR.image_processor(images, return_tensors="np")["pixel_values"].astype(np.float16)


def image_table(samples: list[Sample], processor_dir: str, variants: int, seed: int, workers: int):
    """Unique images of ``samples`` -> (index per sample, [U, 1 + variants, 3, H, W] float16 array)."""
    keys, index, images = {}, [], []
    for s in samples:
        ref = s.images[0]
        key = ref if isinstance(ref, str) else id(ref)
        if key not in keys:
            keys[key] = len(images)
            images.append(s.load_images()[0].convert("RGB"))
        index.append(keys[key])
    jobs = [(im, variants, seed * 1_000_003 + u) for u, im in enumerate(images)]
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(processor_dir,)) as pool:
            arrays = list(pool.map(_variants, jobs, chunksize=64))
    else:
        _init_worker(processor_dir)
        arrays = [_variants(j) for j in jobs]
    return index, np.stack(arrays)


# ---------------------------------------------------------------- tokens

def encode(examples: list[Example], processor, n_img: int):
    """Padded token ids [E, L], label starts [E] and lengths [E] (image token expanded to ``n_img``)."""
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    rows, starts = [], []
    for ex in examples:
        text = processor.apply_chat_template(ex.messages, add_generation_prompt=True, tokenize=False)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        k = prompt.index(image_id)
        prompt = prompt[:k] + [image_id] * n_img + prompt[k + 1:]
        target = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(prompt + target)
        starts.append(len(prompt))
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, torch.tensor(starts), torch.tensor([len(r) for r in rows])


# ---------------------------------------------------------------- training

def _lr(step: int, c: RolesConfig) -> float:
    if step <= c.warmup:
        return c.lr * step / c.warmup
    p = (step - c.warmup) / max(1, c.steps - c.warmup)
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * p))


def build_examples(config: RolesConfig):
    cap = slice(0, config.max_samples or None)
    samples = load_embedded("easyvqa", "train")[cap] + load_embedded("shapes", "train")[cap]
    if config.role == "expert":
        return samples, {"roles": expert_examples(samples, config.seed)}
    return samples, {"answer": [answer_example(s) for s in samples],
                     "roles": reflection_examples(samples, config.seed)}


def train_roles(config: RolesConfig, out: str | Path, device: str = "cpu", workers: int = 1, log=print) -> Path:
    out = Path(out)
    t0 = time.time()
    torch.manual_seed(config.seed)
    samples, groups = build_examples(config)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if config.init_from:
        processor = AutoProcessor.from_pretrained(config.init_from)
        model = AutoModelForImageTextToText.from_pretrained(config.init_from, dtype=torch.float32)
        spec_n_img = model.config.image_seq_length
    else:
        corpus = [ex.messages[0]["content"][-1]["text"] + "\n" + ex.target for ex in groups["roles"][::3]]
        processor = build_processor(build_tokenizer(corpus, config.spec.vocab_size), config.spec)
        model = build_model(processor.tokenizer, config.spec, seed=config.seed)
        spec_n_img = num_image_tokens(config.spec)
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)  # the workers load the processor from here
    image_of, table = image_table(samples, str(out), config.variants, config.seed, workers)
    image_of = {id(s): u for s, u in zip(samples, image_of)}
    pixels = torch.from_numpy(table).to(device)
    data = {}
    for name, examples in groups.items():
        ids, starts, lengths = encode(examples, processor, spec_n_img)
        img = torch.tensor([image_of[id(ex.sample)] for ex in examples])
        deg = torch.tensor([ex.degradable for ex in examples])
        data[name] = [t.to(device) for t in (ids, starts, lengths, img, deg)]
    log(f"[{config.role}] data ready in {time.time() - t0:.0f}s: {sum(len(g) for g in groups.values()):,} examples, "
        f"{len(table):,} images x {1 + config.variants}; {sum(p.numel() for p in model.parameters()):,} parameters")

    model.to(device).train()
    if config.freeze_vision:
        for name, p in model.named_parameters():
            if "vision_tower" in name or "multi_modal_projector" in name:
                p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    rest = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    gen = torch.Generator(device=device).manual_seed(config.seed)
    shares = {"answer": config.answer_share, "roles": 1 - config.answer_share} if "answer" in data else {"roles": 1.0}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)
    history, t_train = [], time.time()
    step = 0
    while step < config.steps:
        step += 1
        if step == 201 and config.max_minutes:
            per_step = (time.time() - t_train) / 200
            fits = int((config.max_minutes * 60 - (time.time() - t0)) / per_step) + 200
            if fits < config.steps:
                log(f"[{config.role}] {per_step * 1000:.0f} ms/step: schedule shortened from {config.steps} "
                    f"to {fits} steps")
                config.steps = max(fits, config.warmup + 100)
        for g in opt.param_groups:
            g["lr"] = _lr(step, config)
        parts = [_batch(data[name], round(config.batch_size * share), config, pixels, gen, name == "answer")
                 for name, share in shares.items() if round(config.batch_size * share)]
        total = sum(p[0].shape[0] for p in parts)
        loss_sum = 0.0
        for input_ids, mask, labels, pix in parts:
            with autocast:
                loss = model(input_ids=input_ids, attention_mask=mask, pixel_values=pix, labels=labels).loss
            (loss * input_ids.shape[0] / total).backward()
            loss_sum += float(loss.detach()) * input_ids.shape[0] / total if step % 100 == 0 else 0.0
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0:
            history.append({"step": step, "loss": round(loss_sum, 4), "seconds": round(time.time() - t_train, 1)})
            if step % config.eval_every == 0 or step == config.steps:
                log(f"[{config.role}] {json.dumps(history[-1])}")
                _save(model, processor, out, config, history, t0, t_train)
    _save(model, processor, out, config, history, t0, t_train)
    return out


def _batch(tensors, n: int, config: RolesConfig, pixels, gen, clean_only: bool):
    ids, starts, lengths, img, deg = tensors
    pick = torch.randint(0, ids.shape[0], (n,), device=ids.device, generator=gen)
    length = int(lengths[pick].max())
    input_ids = ids[pick, :length]
    pos = torch.arange(length, device=ids.device)[None]
    mask = (pos < lengths[pick, None]).long()
    labels = input_ids.masked_fill((pos < starts[pick, None]) | (mask == 0), -100)
    variant = torch.zeros(n, dtype=torch.long, device=ids.device)
    if not clean_only and config.degrade_prob > 0:
        use = (torch.rand(n, device=ids.device, generator=gen) < config.degrade_prob) & deg[pick]
        drawn = torch.randint(1, pixels.shape[1], (n,), device=ids.device, generator=gen)
        variant = torch.where(use, drawn, variant)
    pix = pixels[img[pick], variant].float()
    return input_ids, mask, labels, pix


def _save(model, processor, out: Path, config: RolesConfig, history, t0: float, t_train: float) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps(
        {"config": asdict(config), "train_seconds": round(time.time() - t_train, 1),
         "total_seconds": round(time.time() - t0, 1), "torch": torch.__version__,
         "device": str(next(model.parameters()).device), "history": history}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["expert", "base"])
    ap.add_argument("out")
    ap.add_argument("--init", default="")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-samples", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--variants", type=int)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    a = ap.parse_args()
    config = recipe(a.role)
    config.init_from = a.init
    config.max_samples = a.max_samples
    config.max_minutes = a.max_minutes
    for key in ("steps", "batch_size", "variants"):
        if getattr(a, key) is not None:
            setattr(config, key, getattr(a, key))
    train_roles(config, a.out, device=a.device, workers=a.workers)


if __name__ == "__main__":
    main()
