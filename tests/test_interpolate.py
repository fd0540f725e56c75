"""Weight-space interpolation (catts.train.interpolate): by hand, on the embedded models, and at the end of CDRL."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from catts.models import resolve_model_path
from catts.train.interpolate import interpolate_state, interpolate_weights

CONFIG = Path(__file__).resolve().parents[1] / "catts" / "train" / "configs" / "cdrl_tiny.yaml"


def test_interpolate_state_by_hand():
    base = {"w": torch.tensor([0.0, 2.0, -1.0]), "h": torch.tensor([1.0], dtype=torch.bfloat16),
            "step": torch.tensor([3])}
    tuned = {"w": torch.tensor([1.0, 0.0, -1.0]), "h": torch.tensor([2.0], dtype=torch.bfloat16),
             "step": torch.tensor([3])}
    half = interpolate_state(base, tuned, 0.5)
    assert half["w"].tolist() == [0.5, 1.0, -1.0] and half["h"].dtype == torch.bfloat16
    assert half["h"].item() == 1.5 and half["step"].tolist() == [3]
    assert interpolate_state(base, tuned, 1.0)["w"].tolist() == [1.0, 0.0, -1.0]
    assert interpolate_state(base, tuned, 0.25)["w"].tolist() == [0.25, 1.5, -1.0]
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            interpolate_state(base, tuned, bad)
    with pytest.raises(ValueError, match="differ in 1 tensors"):
        interpolate_state({**base, "extra": torch.zeros(1)}, tuned, 0.5)
    with pytest.raises(ValueError, match="tensor w: shape"):
        interpolate_state({**base, "w": torch.zeros(2)}, tuned, 0.5)
    with pytest.raises(ValueError, match="not floating point"):
        interpolate_state({**base, "step": torch.tensor([4])}, tuned, 0.5)


def test_interpolate_the_embedded_models(tmp_path):
    from catts.data import load_data
    from catts.jobs.ask import to_prompt
    from catts.models import load_backend
    from catts.models.backend import SamplingParams

    base, tuned = resolve_model_path("tiny"), resolve_model_path("tiny-cdrl")
    out = interpolate_weights("tiny", "tiny-cdrl", 0.7, tmp_path / "mixed")
    a, b = load_file(base / "model.safetensors"), load_file(tuned / "model.safetensors")
    m = load_file(out / "model.safetensors")
    assert m.keys() == b.keys()
    changed = [k for k in b if not torch.equal(a[k], b[k])]
    assert len(changed) > 10
    for k in b:
        assert torch.allclose(m[k], a[k] + 0.7 * (b[k] - a[k]), atol=1e-6), k
    record = json.loads((out / "interpolation.json").read_text())
    assert record["weight"] == 0.7 and record["base"] == "tiny"
    for name in ("tokenizer.json", "processor_config.json", "chat_template.jinja", "cdrl_config.json"):
        assert (out / name).read_bytes() == (tuned / name).read_bytes(), name
    # the folder is a model every command takes
    (trace,), = load_backend(out).generate([to_prompt(load_data("shapes:test")[0])], SamplingParams(max_new_tokens=48))
    assert "\\boxed{" in trace.text


def test_cdrl_saves_the_interpolation_and_keeps_the_trained_weights(tmp_path, one_thread):
    pytest.importorskip("trl")
    from catts.train.cdrl import parse_cdrl_args, train_cdrl

    with pytest.raises(ValueError, match="interpolation must be in"):
        parse_cdrl_args(["--config", str(CONFIG), "--interpolation", "0"])
    out = train_cdrl(*parse_cdrl_args([
        "--config", str(CONFIG), "--data", "shapes:test", "--limit", "2", "--max_steps", "1",
        "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "run"), "--learning_rate", "1e-3",
        "--interpolation", "0.5", "--calibration_loss_weight", "1", "--temperature", "1.0",
        "--confidence_kind", "answer_prob"]))  # the Brier loss: a gradient at step 1
    a = load_file(resolve_model_path("tiny") / "model.safetensors")
    t = load_file(out / "trained" / "model.safetensors")
    m = load_file(out / "model.safetensors")
    changed = [k for k in t if not torch.equal(a[k], t[k])]
    assert changed, "one step at lr 1e-3 changed nothing"
    for k in changed:
        assert torch.allclose(m[k], a[k] + 0.5 * (t[k] - a[k]), atol=1e-6), k
    assert json.loads((out / "interpolation.json").read_text())["weight"] == 0.5
    assert (out / "tokenizer.json").exists() and (out / "trainer_state.json").exists()
    assert json.loads((out / "cdrl_config.json").read_text())["interpolation"] == 0.5
