"""Saliency sources for key-region noise: a vision tower's attention, or the model-free fallback.

``attention_saliency`` reads the last layer's attention from the CLS token to the patch tokens of a
CLIP-style vision tower (averaged over heads), as the paper ranks patches by CLIP attention. The
tower comes from a local CLIP checkpoint the user points to, or from a local VLM folder whose own
vision tower is used (``model.vision_tower``). ``spectral`` needs no weights (Hou & Zhang 2007).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from catts.perception.degrade import spectral_residual_saliency, to_rgb

SaliencyFn = Callable[[Image.Image], np.ndarray]


class AttentionSaliency:
    """Last-layer attention of a CLIP-style vision tower over its patches, as a [grid, grid] array summing to 1.

    ``mode="cls"``: attention from the CLS token to each patch (CLIP checkpoints, whose CLS is trained
    to summarise the image). ``mode="received"``: the attention each patch receives from all patch
    tokens (VLM towers such as LLaVA's drop the CLS token, so its attention carries no training signal).
    """

    def __init__(self, vision_model, image_processor, mode: str = "cls"):
        if mode not in ("cls", "received"):
            raise ValueError(f"mode must be cls or received, not {mode!r}")
        self.vision = vision_model.eval()
        self.image_processor = image_processor
        self.mode = mode

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> np.ndarray:
        pixels = self.image_processor([to_rgb(image)], return_tensors="pt")["pixel_values"]
        out = self.vision(pixel_values=pixels.to(next(self.vision.parameters()).dtype), output_attentions=True)
        heads = out.attentions[-1][0].float().mean(0)  # last layer, mean over heads: [tokens, tokens]
        att = heads[0, 1:] if self.mode == "cls" else heads[1:, 1:].mean(0)
        side = int(round(att.numel() ** 0.5))
        if side * side != att.numel():
            raise ValueError(f"vision tower has {att.numel()} patch tokens, not a square grid")
        grid = att.reshape(side, side).cpu().numpy()
        return grid / grid.sum()


def load_saliency(source: str) -> SaliencyFn:
    """``spectral`` (no weights), or a local folder: a CLIP checkpoint, or a VLM whose vision tower is used.

    The embedded model names (``tiny``, ``tiny-expert``) resolve to their folders.
    """
    if source == "spectral":
        return spectral_residual_saliency
    from transformers import AutoConfig, AutoImageProcessor

    from catts.models import resolve_model_path

    path = Path(resolve_model_path(source))
    config = AutoConfig.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    if config.model_type in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(path, attn_implementation="eager")
        return AttentionSaliency(getattr(model, "vision_model", model), image_processor, mode="cls")
    from transformers import AutoModelForImageTextToText

    vlm = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager")
    vision = getattr(vlm, "vision_tower", None) or getattr(getattr(vlm, "model", None), "vision_tower", None)
    if vision is None:
        raise ValueError(f"{source}: found no vision_tower in {type(vlm).__name__}; point to a CLIP checkpoint")
    return AttentionSaliency(vision, image_processor, mode="received")
