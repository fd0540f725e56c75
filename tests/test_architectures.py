"""The transformers backend on other stock architectures: tiny random Qwen2.5-VL, SmolVLM, Idefics3 and
Gemma3 checkpoints built offline (``catts.models.tiny.random``), loaded from folders saved like hub
checkpoints, with a batch of images of different sizes and aspects."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from catts.data import Sample
from catts.jobs.eval import evaluate
from catts.models import load_backend
from catts.models.backend import Prompt, SamplingParams
from catts.models.hf import _pad_per_sample
from catts.models.tiny.random import BUILDERS, build

ARCHS = sorted(BUILDERS)
SIZES = [(64, 64), (96, 48), (40, 80), (50, 30), (64, 64), (30, 90), (80, 40), (48, 96), (70, 70)]
GREEDY = SamplingParams(max_new_tokens=8)
SAMPLED = SamplingParams(n=2, temperature=1.0, top_k=40, seed=0, max_new_tokens=8)


def _image(i: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast, and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_checkpoints")
    folders = {arch: build(arch, root / arch) for arch in ARCHS}
    for arch in ARCHS:  # the same weights, with generation defaults that would change greedy decoding
        noisy = root / f"{arch}-noisy-generation-config"
        shutil.copytree(folders[arch], noisy)
        gc_path = noisy / "generation_config.json"
        gc = json.loads(gc_path.read_text())
        gc.update(repetition_penalty=5.0, no_repeat_ngram_size=2, min_new_tokens=5)
        gc_path.write_text(json.dumps(gc))
        folders[f"{arch}-noisy"] = noisy
    return folders


@pytest.fixture(scope="session")
def arch_prompts():
    questions = ["What color is the shape?", "How many objects are there?", "Is there a circle?"]
    prompts = [Prompt([_image(i, size)], questions[i % 3] + f" ({i})", key=f"p{i}") for i, size in enumerate(SIZES)]
    # a prompt without image (no pixel tensors in its row), and two images in one prompt (Idefics3
    # stacks their crops, 5 + 3, in one row)
    return prompts + [Prompt([], "What is 2 + 3?", key="text-only"),
                      Prompt([_image(20, (64, 64)), _image(21, (40, 80))], "Which image is brighter?", key="two")]


def _ids(traces):
    return [[t.token_ids for t in ts] for ts in traces]


def test_build_is_reproducible_and_has_eos(checkpoints, tmp_path):
    for arch in ARCHS:
        again = build(arch, tmp_path / arch)
        a = (checkpoints[arch] / "model.safetensors").read_bytes()
        assert a == (again / "model.safetensors").read_bytes()
        assert json.loads((again / "generation_config.json").read_text())["eos_token_id"] is not None


@pytest.mark.parametrize("arch", ARCHS)
def test_traces_do_not_depend_on_batch_size(arch, checkpoints, arch_prompts):
    one = load_backend(checkpoints[arch], batch_size=1)
    eight = load_backend(checkpoints[arch], batch_size=8)
    for params in (GREEDY, SAMPLED):
        a, b = one.generate(arch_prompts, params), eight.generate(arch_prompts, params)
        assert _ids(a) == _ids(b)
        for x, y in zip(a, b):
            for s, t in zip(x, y):
                np.testing.assert_allclose(s.logprobs, t.logprobs, atol=1e-5)
    # the random weights still give prompt-dependent traces (else the comparison above proves little)
    assert len({tuple(ts[0].token_ids) for ts in a}) > 1


@pytest.mark.parametrize("arch", ARCHS)
def test_score_matches_generation(arch, checkpoints, arch_prompts):
    backend = load_backend(checkpoints[arch], batch_size=8)
    traces = backend.generate(arch_prompts, SAMPLED)
    flat = [(p, t) for p, ts in zip(arch_prompts, traces) for t in ts]
    scored = backend.score([p for p, _ in flat], [t.token_ids for _, t in flat])
    for (_, t), s in zip(flat, scored):
        assert s.token_ids == t.token_ids
        np.testing.assert_allclose(s.logprobs, t.logprobs, atol=1e-5)
        np.testing.assert_allclose(s.top_logprobs, t.top_logprobs, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_generation_settings_do_not_touch_decoding(arch, checkpoints, arch_prompts):
    clean_backend = load_backend(checkpoints[arch], batch_size=8)
    noisy_backend = load_backend(checkpoints[f"{arch}-noisy"], batch_size=8)
    assert _ids(clean_backend.generate(arch_prompts, GREEDY)) == _ids(noisy_backend.generate(arch_prompts, GREEDY))
    # the settings do matter to a plain ``model.generate`` with the checkpoint's own defaults
    enc = clean_backend._encode(arch_prompts)
    with torch.no_grad():
        plain = [b.model.generate(**enc, max_new_tokens=8) for b in (clean_backend, noisy_backend)]
    assert not torch.equal(*plain)


@pytest.mark.parametrize("arch", ARCHS)
def test_evaluate_writes_records(arch, checkpoints, tmp_path):
    samples = [Sample(id=f"s{i}", images=[_image(i, size)], question="What color is the shape?", answer="red")
               for i, size in enumerate(SIZES[:4])]
    backend = load_backend(checkpoints[arch], batch_size=4)
    summary = evaluate(backend, samples, tmp_path, max_new_tokens=8)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in samples]
    assert all("error" not in r and r["num_tokens"] >= 1 for r in records)
    assert summary["n"] == 4


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_runs_where_nothing_parses(arch, checkpoints, tmp_path):
    """A random model never boxes an answer: every level is all-unparsed, and the probe still writes its
    summary, figures and report (it once crashed there)."""
    from catts.jobs.probe import ProbeConfig, run_probe

    backend = load_backend(checkpoints[arch], batch_size=8)
    cfg = ProbeConfig(model=str(checkpoints[arch]), data=["shapes:test"], degrade=["none:0", "diffusion:0,999"],
                      limit=3, map_limit=2, max_new_tokens=6)
    summary = run_probe(backend, cfg, tmp_path)
    assert [lv["n"] for lv in summary["levels"]] == [3, 3, 3]
    assert all(lv["unparsed_rate"] == 1.0 and lv["accuracy"] == 0.0 for lv in summary["levels"])
    assert (tmp_path / "summary.md").exists() and (tmp_path / "figure1_shapes_test_diffusion.png").exists()
    assert "NaN" not in (tmp_path / "summary.json").read_text()


def test_confidences_are_float32_in_bfloat16(checkpoints, arch_prompts):
    """bf16 weights, fp32 confidences: log-probabilities come from the logits cast to float32."""
    backend = load_backend(checkpoints["qwen2_5_vl"], batch_size=8, dtype="bfloat16")
    assert backend.model.dtype == torch.bfloat16
    prompt = arch_prompts[0]
    trace = backend.generate([prompt], GREEDY)[0][0]
    with torch.no_grad():
        logits = backend.model(**backend._encode([prompt])).logits[0, -1]
    in_fp32 = torch.log_softmax(logits.float(), -1).topk(20).values.numpy()
    in_bf16 = torch.log_softmax(logits, -1).topk(20).values.float().numpy()
    assert trace.top_logprobs.dtype == np.float32
    np.testing.assert_allclose(trace.top_logprobs[0], in_fp32, atol=1e-5)
    assert np.abs(in_bf16 - in_fp32).max() > 1e-4  # a bf16 softmax would be told apart


def test_padded_rows_equal_rows_alone(checkpoints, arch_prompts):
    """Idefics3's crop stacks differ in length per image; a padded row's logits are the row's alone."""
    backend = load_backend(checkpoints["idefics3"], batch_size=8)
    prompts = arch_prompts[:3] + arch_prompts[-1:]  # 64x64, 96x48, 40x80, both: 5, 3, 3 and 8 crops
    enc = backend._encode(prompts)
    assert enc["pixel_values"].shape[:2] == (4, 8) and enc["pixel_attention_mask"].shape[:2] == (4, 8)
    assert not enc["pixel_values"][1, 3:].any() and not enc["pixel_attention_mask"][1, 3:].any()
    assert enc["pixel_values"][3].flatten(1).any(1).all()  # the two-image row: 8 real crops
    with torch.no_grad():
        together = backend.model(**enc).logits
        for row, prompt in enumerate(prompts):
            alone = backend.model(**backend._encode([prompt])).logits[0]
            torch.testing.assert_close(together[row, -alone.shape[0]:], alone, atol=1e-5, rtol=0)


def test_pad_per_sample_rule():
    crops = [torch.ones(1, 5, 3, 4, 4), torch.ones(1, 3, 3, 4, 6)]
    a, b = _pad_per_sample(crops)
    assert a.shape == b.shape == (1, 5, 3, 4, 6)
    assert a[0, :, :, :, :4].all() and not a[0, :, :, :, 4:].any()
    assert b[0, :3].all() and not b[0, 3:].any()
    masks = [torch.ones(1, 5, 4, 4, dtype=torch.bool), torch.ones(1, 3, 4, 4, dtype=torch.bool)]
    assert _pad_per_sample(masks)[1].dtype == torch.bool and not _pad_per_sample(masks)[1][0, 3:].any()
    # Qwen2.5-VL style: flattened patches and per-image grids are concatenated as they are
    flat = [torch.ones(16, 12), torch.ones(24, 12)]
    grids = [torch.tensor([[1, 4, 4]]), torch.tensor([[1, 4, 6], [1, 2, 2]])]
    assert _pad_per_sample(flat) is flat and _pad_per_sample(grids) is grids
    assert _pad_per_sample(grids[:1] * 2) == grids[:1] * 2
