"""Weight-space interpolation between the model training started from and the trained one (WiSE-FT).

``interpolate_weights(base, tuned, weight, out)`` saves the model whose every floating-point parameter is

    theta = theta_base + weight * (theta_tuned - theta_base),        0 < weight <= 1

so ``weight = 1`` is the trained model and smaller weights keep less of what training changed (Wortsman et al.,
"Robust fine-tuning of zero-shot models", 2022, call this weight-space ensembling). catts uses it after CDRL
(``CDRLConfig.interpolation``, a catts extension, not in the paper): on the embedded model, training taught the
answer probability to fall with the image while costing a few clean answers, and the interpolated weights keep
most of the first and little of the second (docs/cdrl.md has the sweep).

Both models are loaded by transformers (so a base checkpoint saved in an older key layout, as Qwen2.5-VL's on the
hub, lines up with the trained one) on the CPU: about twice the model's size in memory. Parameters are combined
in float32 and stored in the trained model's dtype. transformers and safetensors have no such operation, hence
this module; it is a few lines over their loading and saving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

# Written beside the interpolated weights: where they came from, so a run folder says what it holds.
RECORD = "interpolation.json"


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      weight: float) -> dict[str, torch.Tensor]:
    """``base + weight * (tuned - base)`` for each floating-point tensor (others, e.g. integer buffers, must be
    equal and are kept). Both dicts need the same keys and shapes; a clear error names the first that differs."""
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"interpolation weight must be in (0, 1], got {weight}")
    missing = sorted(set(tuned) ^ set(base))
    if missing:
        raise ValueError(f"the two models differ in {len(missing)} tensors, e.g. {missing[:3]}: not the same "
                         "architecture (interpolate a model with the one it was trained from)")
    out = {}
    for name, t in tuned.items():
        b = base[name]
        if b.shape != t.shape:
            raise ValueError(f"tensor {name}: shape {tuple(b.shape)} in the base, {tuple(t.shape)} in the trained model")
        if not t.is_floating_point():
            if not torch.equal(b, t):
                raise ValueError(f"tensor {name} is not floating point and differs between the two models")
            out[name] = t
            continue
        b32, t32 = b.to(torch.float32), t.to(torch.float32)
        out[name] = (b32 + weight * (t32 - b32)).to(t.dtype)
    return out


def interpolate_weights(base: str | Path, tuned: str | Path, weight: float, out: str | Path) -> Path:
    """Save ``base + weight * (tuned - base)`` (see the module) with the trained model's config and processor
    files to ``out`` (which may be ``tuned`` itself: the files are replaced), plus ``interpolation.json`` (base,
    trained model, weight; the trained model's folder relative to ``out`` when it lies inside it)."""
    from transformers import AutoModelForImageTextToText

    from catts.models import resolve_model_path

    base_path, tuned_path, out = resolve_model_path(base), resolve_model_path(tuned), Path(out)
    base_model = AutoModelForImageTextToText.from_pretrained(base_path, dtype="auto")
    model = AutoModelForImageTextToText.from_pretrained(tuned_path, dtype="auto")
    state = interpolate_state(base_model.state_dict(), model.state_dict(), weight)
    del base_model
    model.load_state_dict(state)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != tuned_path.resolve():
        for f in tuned_path.iterdir():  # processor, tokenizer, generation config, run records
            if f.is_file() and not f.name.startswith("model") and f.suffix != ".bin":
                shutil.copy2(f, out / f.name)
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    model.save_pretrained(out)
    try:  # the trained weights beside the interpolation (CDRL's output_dir/trained) are named relative to it
        trained_name = str(tuned_path.resolve().relative_to(out.resolve()))
    except ValueError:
        trained_name = str(tuned)
    (out / RECORD).write_text(json.dumps({"base": str(base), "trained": trained_name, "weight": weight,
                                          "formula": "base + weight * (trained - base)"}, indent=2) + "\n")
    return out
