"""Tiny randomly initialised checkpoints of other stock architectures, built offline.

Each builder writes a folder that looks like a hub checkpoint (``save_pretrained`` of the model and
of its processor), so ``AutoModelForImageTextToText`` / ``AutoProcessor`` load it like any other.
The weights mean nothing: the folders exist to exercise the transformers backend on architectures
whose processors differ from LLaVA's (Idefics3's and SmolVLM's variable number of image crops with
a pixel mask, Gemma3's image soft tokens with bidirectional token types, Qwen2.5-VL's image-size
dependent token counts with M-RoPE). Builds are seeded and take well under a second.

The tokenizer is the byte-level BPE of ``catts.models.tiny.build`` with each processor's special
tokens added, and a chat template in the architecture's own style.

SmolVLM's and Qwen2.5-VL's processors hold a video processor that needs torchvision (SmolVLM's also
``num2words``); both are catts dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from catts.models.tiny.build import PAD, build_tokenizer

# A small corpus for the BPE merges: any text still encodes (byte level), this only makes it compact.
CORPUS = [
    "What color is the shape? Answer with one word.",
    "How many objects are there? Reason step by step, then give the answer in \\boxed{}.",
    "The image shows a red circle, a blue square and a green triangle on a white background.",
    "I see: red circle top left. \\boxed{B}",
    "Is there a dog in the picture? yes no maybe 0 1 2 3 4 5 6 7 8 9",
    "User: Assistant: model user question answer options A B C D",
] * 4

VOCAB_SIZE = 384


def _tokenizer(specials: list[str], named: dict[str, str], eos: str, chat_template: str):
    """The shared BPE tokenizer plus ``specials``; ``named`` become attributes (``image_token`` ...)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    backend = build_tokenizer(CORPUS, VOCAB_SIZE).backend_tokenizer
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=eos, bos_token=None,
                                  unk_token=None, extra_special_tokens=named, model_max_length=2048,
                                  padding_side="left")
    tok.chat_template = chat_template
    return tok


def _finish(model, tokenizer, eos: str) -> None:
    gc = model.generation_config
    gc.eos_token_id = tokenizer.convert_tokens_to_ids(eos)
    gc.pad_token_id = tokenizer.pad_token_id
    gc.bos_token_id = None


def _save(folder: str | Path, model, processor) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- Idefics3 ------------------------------------------------------------------------------
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}"
    "{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _crops_config(config_cls, tok, crop: int, patch: int, scale: int):
    """The config of an Idefics3-style model (Idefics3, SmolVLM): a tiny vision tower and Llama text model."""
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    return config_cls(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": crop, "patch_size": patch},
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 1024, "pad_token_id": tok.pad_token_id, "eos_token_id": eou,
                     "bos_token_id": None, "tie_word_embeddings": False},
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale, tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id)


def build_idefics3(folder: str | Path, seed: int = 0, *, crop: int = 32, longest_edge: int = 64) -> Path:
    """Idefics3 (SigLIP-style vision + pixel-shuffle connector + Llama): images of ``longest_edge`` pixels
    split into ``crop``-sized crops plus a global view, so the crop count depends on size and aspect."""
    import torch
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                              Idefics3Processor)

    rows_cols = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<|im_start|>",
                      *rows_cols], {"image_token": "<image>"}, "<end_of_utterance>", IDEFICS3_TEMPLATE)
    patch, scale = 8, 2
    image_seq_len = (crop // patch) ** 2 // scale ** 2
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": longest_edge},
                                                max_image_size={"longest_edge": crop})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=image_seq_len,
                                  chat_template=IDEFICS3_TEMPLATE)
    config = _crops_config(Idefics3Config, tok, crop, patch, scale)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    _finish(model, tok, "<end_of_utterance>")
    return _save(folder, model, processor)


# ---- Gemma3 --------------------------------------------------------------------------------
GEMMA3_TEMPLATE = (
    "{% for m in messages %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(folder: str | Path, seed: int = 0, *, image_size: int = 32) -> Path:
    """Gemma3 (SigLIP vision + pooled projector + Gemma3 text with bidirectional image attention)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer([*named.values(), "<start_of_turn>", "<end_of_turn>"], named, "<end_of_turn>",
                     GEMMA3_TEMPLATE)
    patch, tokens_per_image = 8, 4
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=tokens_per_image,
                                chat_template=GEMMA3_TEMPLATE)
    eos = tok.convert_tokens_to_ids("<end_of_turn>")
    config = Gemma3Config(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": image_size,
                       "patch_size": patch, "vision_use_head": False},
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                     "query_pre_attn_scalar": 32, "sliding_window": 16, "max_position_embeddings": 1024,
                     "pad_token_id": tok.pad_token_id, "eos_token_id": eos, "bos_token_id": None},
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tok.convert_tokens_to_ids(named["boi_token"]),
        eoi_token_index=tok.convert_tokens_to_ids(named["eoi_token"]),
        image_token_index=tok.convert_tokens_to_ids(named["image_token"]))
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    _finish(model, tok, "<end_of_turn>")
    return _save(folder, model, processor)


BUILDERS: dict[str, Callable[..., Path]] = {"idefics3": build_idefics3, "gemma3": build_gemma3}


def build(arch: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny random ``arch`` checkpoint (one of ``BUILDERS``) into ``folder``."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(BUILDERS)}")
    return BUILDERS[arch](folder, seed)


# ---- Qwen2.5-VL ----------------------------------------------------------------------------
QWEN25VL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen2_5_vl(folder: str | Path, seed: int = 0, *, patch: int = 8, max_side: int = 64) -> Path:
    """Qwen2.5-VL (window-attention ViT with 2x2 patch merging + Qwen2 text with M-RoPE): the number of
    image tokens follows each image's size. Its processor needs torchvision (video processor)."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessorPil)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_start_token": "<|vision_start|>",
             "vision_end_token": "<|vision_end|>"}
    tok = _tokenizer([*named.values(), "<|im_start|>", "<|im_end|>"], named, "<|im_end|>", QWEN25VL_TEMPLATE)
    merge = 2
    pixels = {"min_pixels": (patch * merge) ** 2, "max_pixels": max_side * max_side}
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=merge, temporal_patch_size=2, **pixels)
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=merge, temporal_patch_size=2, **pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                    chat_template=QWEN25VL_TEMPLATE)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": patch, "spatial_merge_size": merge, "temporal_patch_size": 2,
                       "window_size": 4 * patch, "fullatt_block_indexes": [1]},
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "pad_token_id": tok.pad_token_id,
                     "eos_token_id": eos, "bos_token_id": None, "tie_word_embeddings": False},
        image_token_id=tok.convert_tokens_to_ids(named["image_token"]),
        video_token_id=tok.convert_tokens_to_ids(named["video_token"]),
        vision_start_token_id=tok.convert_tokens_to_ids(named["vision_start_token"]), tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _finish(model, tok, "<|im_end|>")
    return _save(folder, model, processor)


# ---- SmolVLM -------------------------------------------------------------------------------
def build_smolvlm(folder: str | Path, seed: int = 0, *, crop: int = 32, longest_edge: int = 64) -> Path:
    """SmolVLM (Idefics3's layout: crops plus a global view, pixel-shuffle connector, Llama text).
    Its processor needs torchvision (video processor) and num2words."""
    import torch
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    rows_cols = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _tokenizer(["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>",
                      "<|im_start|>", *rows_cols], {"image_token": "<image>"}, "<end_of_utterance>", IDEFICS3_TEMPLATE)
    patch, scale = 8, 2
    image_processor = SmolVLMImageProcessorPil(size={"longest_edge": longest_edge},
                                               max_image_size={"longest_edge": crop})
    video_processor = SmolVLMVideoProcessor(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": crop})
    processor = SmolVLMProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                 image_seq_len=(crop // patch) ** 2 // scale ** 2, chat_template=IDEFICS3_TEMPLATE)
    config = _crops_config(SmolVLMConfig, tok, crop, patch, scale)
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config)
    _finish(model, tok, "<end_of_utterance>")
    return _save(folder, model, processor)


BUILDERS.update({"qwen2_5_vl": build_qwen2_5_vl, "smolvlm": build_smolvlm})
