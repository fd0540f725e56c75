"""The embedded tiny models: a stock transformers LLaVA, the training recipe's encoding and a short run."""

import json

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

from catts.models import resolve_model_path
from catts.models.tiny.build import SPECS, num_image_tokens
from catts.models.tiny.train import Encoded, TrainConfig, chat_prompt, target_text, train_tiny


def test_shipped_models_load_with_auto_classes():
    for name in ("tiny", "tiny-expert"):
        path = resolve_model_path(name)
        model = AutoModelForImageTextToText.from_pretrained(path)
        assert isinstance(model, LlavaForConditionalGeneration)
        assert model.config.image_seq_length == num_image_tokens(SPECS[name])
        assert (path / "model.safetensors").stat().st_size < 20 * 2**20
        assert json.loads((path / "train_log.json").read_text())["history"]
    n_base = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(resolve_model_path("tiny")).parameters())
    n_expert = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(resolve_model_path("tiny-expert")).parameters())
    assert n_expert > 1.5 * n_base


def test_training_encoding_equals_processor(shapes_test):
    processor = AutoProcessor.from_pretrained(resolve_model_path("tiny"))
    samples = list(shapes_test[:5])
    enc = Encoded(samples, processor, SPECS["tiny"])
    for s, ids, start in zip(samples, enc.ids, enc.starts):
        ref = processor(text=[chat_prompt(processor, s)], images=[s.load_images()], return_tensors="pt")
        assert ids[:start] == ref["input_ids"][0].tolist()
        assert ref["input_ids"][0].tolist().count(processor.tokenizer.convert_tokens_to_ids("<image>")) == \
            num_image_tokens(SPECS["tiny"])
        assert processor.tokenizer.decode(ids[start:], skip_special_tokens=True) == target_text(s)


def test_short_training_run_lowers_loss_and_saves(tmp_path):
    config = TrainConfig(steps=30, batch_size=16, warmup=5, eval_every=10, max_samples=64, lr=2e-3)
    out = train_tiny(config, tmp_path / "m", log=lambda s: None)
    log = json.loads((out / "train_log.json").read_text())
    first, last = log["history"][0]["loss"], log["history"][-1]["loss"]
    assert last < first
    model = AutoModelForImageTextToText.from_pretrained(out)
    assert torch.isfinite(next(model.parameters())).all()
