"""Build the embedded tiny vision-language models: a real LLaVA (CLIP vision tower + Llama text
model) with a byte-level BPE tokenizer, a CLIP image processor and a chat template, all made here.

Being a stock transformers architecture, the saved folder loads with ``AutoModelForImageTextToText``
and ``AutoProcessor`` like any hub checkpoint, and vLLM can serve it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

IMAGE_TOKEN = "<image>"
USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<pad>"
SPECIAL_TOKENS = [PAD, END, USER, ASSISTANT, IMAGE_TOKEN]

# One user turn (images, then text) and the assistant's reply, each closed by <|end|>.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER +
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + IMAGE_TOKEN +
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}" + END +
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT +
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    + END + "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes of one tiny model."""

    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 3
    heads: int = 4
    vocab_size: int = 640


SPECS = {
    "tiny": TinySpec(),
    "tiny-expert": TinySpec(vision_hidden=96, vision_layers=2, text_hidden=160, text_layers=4),
}


def build_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``corpus``: lossless for any text, compact for ours."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=END, bos_token=None,
                                   unk_token=None, extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   model_max_length=512, padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer: PreTrainedTokenizerFast, spec: TinySpec) -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch_size,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=1)


def build_model(tokenizer: PreTrainedTokenizerFast, spec: TinySpec, seed: int = 0) -> LlavaForConditionalGeneration:
    import torch

    vision = CLIPVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=spec.vision_hidden * 4,
                              num_hidden_layers=spec.vision_layers, num_attention_heads=spec.heads,
                              image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.text_hidden,
                       intermediate_size=spec.text_hidden * 3, num_hidden_layers=spec.text_layers,
                       num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                       max_position_embeddings=512, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=True,
                         image_seq_length=num_image_tokens(spec))
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def num_image_tokens(spec: TinySpec) -> int:
    return (spec.image_size // spec.patch_size) ** 2
