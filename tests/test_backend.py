"""The transformers backend on the real embedded tiny model."""

import numpy as np
import pytest
from PIL import Image

from catts.jobs.ask import to_prompt
from catts.models import load_backend, resolve_model_path
from catts.models.backend import Backend, Prompt, SamplingParams, fit_image, sample_seed
from catts.perception.degrade import degrade


@pytest.fixture(scope="module")
def prompts(shapes_test, easyvqa_test):
    return [to_prompt(s) for s in list(shapes_test[:6]) + list(easyvqa_test[:4])]


def test_protocol_and_paths(tiny_backend):
    assert isinstance(tiny_backend, Backend)
    assert (resolve_model_path("tiny") / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model_path("Qwen/Qwen2.5-VL-7B-Instruct")


def test_greedy_identical_for_batch_sizes_1_and_8(tiny_backend, prompts):
    one = load_backend("tiny", batch_size=1)
    params = SamplingParams(max_new_tokens=48)
    a = one.generate(prompts, params)
    b = tiny_backend.generate(prompts, params)
    assert [t[0].token_ids for t in a] == [t[0].token_ids for t in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[0].logprobs, y[0].logprobs, atol=1e-4)


def test_trace_fields_and_raw_logprobs(tiny_backend, prompts):
    (trace,), = tiny_backend.generate(prompts[:1], SamplingParams(max_new_tokens=48))
    T = trace.num_tokens
    assert trace.top_logprobs.shape == (T, 20) and trace.top_ids.shape == (T, 20)
    assert np.all(np.diff(trace.top_logprobs, axis=1) <= 1e-7), "top-k must be sorted descending"
    # greedy: the chosen token is the top-1 of the raw distribution
    np.testing.assert_allclose(trace.logprobs, trace.top_logprobs[:, 0], atol=1e-6)
    assert trace.finish_reason == "stop" and "\\boxed{" in trace.text
    assert trace.logprob_source == "raw"


def test_teacher_forced_score_matches_generation(tiny_backend, prompts):
    traces = tiny_backend.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=48, seed=5))
    flat = [(p, t) for p, ts in zip(prompts, traces) for t in ts]
    scored = tiny_backend.score([p for p, _ in flat], [t.token_ids for _, t in flat])
    for (_, t), s in zip(flat, scored):
        np.testing.assert_allclose(s.logprobs, t.logprobs, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(s.top_logprobs, t.top_logprobs, rtol=1e-4, atol=1e-4)
    # text continuations are tokenised by the model's tokenizer
    s_text = tiny_backend.score(prompts[:1], [flat[0][1].text])[0]
    assert s_text.logprobs.shape[0] >= 1 and np.all(s_text.logprobs <= 0)


def test_sampling_is_seeded_and_batch_independent(tiny_backend, prompts):
    # on noised images, where the tiny model is unsure (on clean ones its samples hardly differ)
    prompts = [Prompt([degrade(im, "diffusion", 700, seed=0, key=p.key) for im in p.images], p.text, key=p.key)
               for p in prompts]
    params = SamplingParams(n=4, temperature=1.0, top_k=40, max_new_tokens=48, seed=11)
    a = tiny_backend.generate(prompts, params)
    b = load_backend("tiny", batch_size=3).generate(prompts[::-1], params)[::-1]  # other batches, other order
    assert [[t.token_ids for t in ts] for ts in a] == [[t.token_ids for t in ts] for ts in b]
    c = tiny_backend.generate(prompts, SamplingParams(n=4, temperature=1.0, top_k=40, max_new_tokens=48, seed=12))
    assert [[t.token_ids for t in ts] for ts in a] != [[t.token_ids for t in ts] for ts in c]
    # temperature 1 on noised images must produce some diversity across 10 prompts x 4 samples
    assert any(len({tuple(t.token_ids) for t in ts}) > 1 for ts in a)


def test_replies_never_hold_an_image_placeholder(tiny_backend, prompts):
    # A prompt's image token sampled into a reply breaks the next forward pass over prompt + reply (a CDRL
    # trainer's: "image features and image tokens do not match"). At temperature 5 the tiny model's next-token
    # distribution is nearly flat over its small vocabulary, so 2 x 16 x 32 draws would hit the token many times.
    image_id = tiny_backend.model.config.image_token_id
    assert tiny_backend.never_sample == [image_id]
    vocab = tiny_backend.model.config.text_config.vocab_size
    assert vocab < 1000, vocab
    params = SamplingParams(n=16, temperature=5.0, top_k=0, max_new_tokens=32, seed=3)
    traces = [t for ts in tiny_backend.generate(prompts[:2], params) for t in ts]
    ids = [i for t in traces for i in t.token_ids]
    assert len(set(ids)) > vocab // 4  # the draws did spread over the vocabulary
    assert image_id not in ids


def test_top_k_1_sampling_equals_greedy(tiny_backend, prompts):
    greedy = tiny_backend.generate(prompts[:4], SamplingParams(max_new_tokens=48))
    topk1 = tiny_backend.generate(prompts[:4], SamplingParams(n=2, temperature=1.0, top_k=1, max_new_tokens=48))
    for g, ts in zip(greedy, topk1):
        assert all(t.token_ids == g[0].token_ids for t in ts)


def test_next_token_logprobs_match_score(tiny_backend, prompts):
    (trace,), = tiny_backend.generate(prompts[:1], SamplingParams(max_new_tokens=48))
    prefix = trace.token_ids[:3]
    lp = tiny_backend.next_token_logprobs([prompts[0], prompts[0]], [prefix, trace.token_ids[:4]])
    assert lp.shape[0] == 2 and np.allclose(np.exp(lp).sum(-1), 1, atol=1e-4)
    assert lp[0, trace.token_ids[3]] == pytest.approx(float(trace.logprobs[3]), abs=1e-4)


def test_image_guard_and_odd_images(tiny_backend):
    big = Image.new("RGB", (4000, 3000), (250, 250, 250))
    assert fit_image(big, 1_000_000).size[0] * fit_image(big, 1_000_000).size[1] <= 1_000_000
    assert fit_image(Image.new("RGBA", (10, 10)), None).mode == "RGB"
    odd = [Prompt([big], "How many objects are there?\nReason step by step.", "big"),
           Prompt([Image.new("L", (7, 300), 0)], "What color is the shape?", "gray")]
    out = tiny_backend.generate(odd, SamplingParams(max_new_tokens=16))
    assert all(len(t[0].token_ids) >= 1 for t in out)


def test_sampling_params_validation_and_seed():
    with pytest.raises(ValueError):
        SamplingParams(n=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    assert sample_seed(0, "a", 1) == sample_seed(0, "a", 1) != sample_seed(0, "a", 2)


def test_token_pieces_rebuild_the_text(tiny_backend):
    tok = tiny_backend.tokenizer
    for text in ["I see: red circle top left. \\boxed{B}", "héllo wörld ✓ 数学 \\boxed{12}", "a  b\n\nc"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = tiny_backend.token_pieces(ids)
        assert len(pieces) == len(ids) and "".join(pieces) == text


def test_score_of_an_empty_continuation(tiny_backend, prompts):
    (trace,) = tiny_backend.score(prompts[:1], [[]])
    assert trace.num_tokens == 0 and trace.tokens == [] and trace.logprob_source == "raw"
    assert trace.top_logprobs.shape == (0, 20) and trace.finish_reason == "stop"


def test_sample_waves_are_nested(tiny_backend, prompts):
    """Waves of samples: 4 from index 0 then 4 from index 4 are the 8 samples drawn at once."""
    base = dict(temperature=3.0, seed=3, max_new_tokens=24)  # hot: the tiny model is peaked at T=1
    whole = tiny_backend.generate(prompts[:3], SamplingParams(n=8, **base))
    first = tiny_backend.generate(prompts[:3], SamplingParams(n=4, **base))
    second = tiny_backend.generate(prompts[:3], SamplingParams(n=4, first_index=4, **base))
    for w, a, b in zip(whole, first, second):
        assert [t.token_ids for t in w] == [t.token_ids for t in a + b]
    assert any([t.token_ids for t in a] != [t.token_ids for t in b] for a, b in zip(first, second))  # new samples
    with pytest.raises(ValueError, match="first_index"):
        SamplingParams(first_index=-1)


def test_multi_turn_prompts(tiny_backend, prompts):
    """The critic loop's shape: question, the model's answer, a critique; batched with single-turn prompts."""
    first = prompts[0]
    answer = tiny_backend.generate([first], SamplingParams(max_new_tokens=32))[0][0].text
    follow = Prompt(first.images, first.text, key="again", turns=[("assistant", answer),
                                                                   ("user", "Look again. Answer again in \\boxed{}.")])
    text = tiny_backend.chat_text(follow)
    assert text.count("<|user|>") == 2 and answer in text and text.endswith("<|assistant|>")
    batch = [prompts[1], follow, prompts[2]]
    together = tiny_backend.generate(batch, SamplingParams(max_new_tokens=16))
    alone = [tiny_backend.generate([p], SamplingParams(max_new_tokens=16))[0] for p in batch]
    assert [t[0].token_ids for t in together] == [t[0].token_ids for t in alone]
    with pytest.raises(ValueError, match="alternate"):
        Prompt(first.images, first.text, turns=[("user", "x")]).messages()
    with pytest.raises(ValueError, match="drops system messages"):  # the tiny template has no system role
        tiny_backend.chat_text(Prompt(first.images, first.text, system="You are a careful grader."))


def test_stop_strings_end_the_trace(tiny_backend, prompts):
    params = SamplingParams(max_new_tokens=48)
    full = tiny_backend.generate(prompts[:4], params)
    stopped = tiny_backend.generate(prompts[:4], SamplingParams(max_new_tokens=48, stop=("\\boxed",)))
    one_by_one = [tiny_backend.generate([p], SamplingParams(max_new_tokens=48, stop=("\\boxed",)))[0]
                  for p in prompts[:4]]
    cut = 0
    for (f,), (s,), (o,) in zip(full, stopped, one_by_one):
        assert s.token_ids == o.token_ids  # batch-independent
        assert s.token_ids == f.token_ids[: s.num_tokens]  # a prefix of the unstopped trace, same log-probs
        np.testing.assert_array_equal(s.logprobs, f.logprobs[: s.num_tokens])
        if "\\boxed" in f.text:
            assert s.text.endswith("\\boxed") and s.finish_reason == "stop" and s.num_tokens < f.num_tokens
            assert "".join(s.tokens) == s.text
            cut += 1
    assert cut >= 3
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop="\\boxed")


def test_score_candidates_run_the_prompt_once_and_match_score(tiny_backend, prompts):
    greedy = tiny_backend.generate(prompts[:5], SamplingParams(max_new_tokens=48))
    sampled = tiny_backend.generate(prompts[:5], SamplingParams(n=2, temperature=1.0, max_new_tokens=48, seed=2))
    candidates = [[g[0], s[0].token_ids, s[1].text, "\\boxed{B}", [], g[0].token_ids[:1]]
                  for g, s in zip(greedy, sampled)]
    small = load_backend("tiny", batch_size=4)  # 6 candidates a prompt: more rows than a batch
    calls = []
    small.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs.get("pixel_values") is not None, len(kwargs["input_ids"]))),
        with_kwargs=True)
    together = small.score_candidates(prompts[:5], candidates)
    assert [rows for images, rows in calls if images] == [4, 1]  # each prompt (and image) runs once
    assert all(rows <= 4 for images, rows in calls if not images) and len(calls) > 2
    flat = [(p, c) for p, cands in zip(prompts[:5], candidates) for c in cands]
    one_by_one = tiny_backend.score([p for p, _ in flat], [c for _, c in flat])
    assert [len(ts) for ts in together] == [6] * 5
    for a, b in zip([t for ts in together for t in ts], one_by_one, strict=True):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=1e-4)
        assert list(a.top_ids[:, 0]) == list(b.top_ids[:, 0])
    for g, ts in zip(greedy, together):  # the generated trace scored after a cached prompt: its own log-probs
        np.testing.assert_allclose(ts[0].logprobs, g[0].logprobs, atol=1e-4)


def test_text_is_scored_with_its_end_token(tiny_backend, prompts):
    greedy = tiny_backend.generate(prompts[:4], SamplingParams(max_new_tokens=48))
    ended = [g[0] for g in greedy if g[0].finish_reason == "stop"]
    assert ended and tiny_backend.end_id in tiny_backend.eos_ids
    scored = tiny_backend.score(prompts[:len(ended)], [t.text for t in ended])
    for t, s in zip(ended, scored):  # the complete answer: the same tokens as generated, end token included
        assert s.token_ids == t.token_ids and s.token_ids[-1] == tiny_backend.end_id and s.finish_reason == "stop"
        np.testing.assert_allclose(s.logprobs, t.logprobs, atol=1e-4)
    bare = tiny_backend.score(prompts[:1], [ended[0].text], add_end=False)[0]
    assert bare.token_ids == ended[0].token_ids[:-1] and bare.finish_reason == "length"


def test_token_ids_of_another_vocabulary_are_refused(tiny_backend, prompts):
    expert = load_backend("tiny-expert", batch_size=8)
    assert expert.vocab_fingerprint != tiny_backend.vocab_fingerprint
    (trace,), = tiny_backend.generate(prompts[:1], SamplingParams(max_new_tokens=32))
    assert trace.meta["vocab"] == tiny_backend.vocab_fingerprint
    same = tiny_backend.score(prompts[:1], [trace])[0]
    assert same.token_ids == trace.token_ids and same.meta["vocab"] == tiny_backend.vocab_fingerprint
    with pytest.raises(ValueError, match="pass its text"):
        expert.score(prompts[:1], [trace])
    with pytest.raises(ValueError, match="pass its text"):
        expert.score_candidates(prompts[:1], [[trace.text, trace]])
    across = expert.score(prompts[:1], [trace.text])[0]  # the text is the way across vocabularies
    assert across.meta["vocab"] == expert.vocab_fingerprint and across.token_ids[-1] == expert.end_id
    with pytest.raises(ValueError, match="out of its vocabulary"):
        tiny_backend.score(prompts[:1], [[5, tiny_backend.vocab_size]])
    with pytest.raises(ValueError, match="out of its vocabulary"):
        tiny_backend.score_candidates(prompts[:1], [[[-1]]])


def test_probe_levels_sample_with_their_own_keys(tiny_backend, shapes_test, tmp_path):
    """Every degradation level of a question is its own prompt key (the record key), so sampling at two
    levels draws from two streams; greedy answers do not depend on the key."""
    from catts.jobs.ask import Item, ask
    from catts.jobs.probe import ProbeConfig, _Prepare, record_key
    from catts.jobs.rundir import RunDir

    class Recorder:
        def __init__(self, inner):
            self.inner, self.max_pixels, self.keys = inner, inner.max_pixels, []

        def generate(self, prompts, params):
            self.keys += [p.key for p in prompts]
            return self.inner.generate(prompts, params)

    sample = shapes_test[0]
    items = [Item(sample, record_key("shapes:test", sample.id, "diffusion", level),
                  {"data": "shapes:test", "kind": "diffusion", "level": level}) for level in (0, 1)]
    recorder = Recorder(tiny_backend)
    params = SamplingParams(n=4, temperature=3.0, max_new_tokens=16, seed=0)
    ask(recorder, items, params, RunDir(tmp_path / "run", {"task": "test"}),
        prepare=_Prepare(ProbeConfig(), tiny_backend.max_pixels))
    assert recorder.keys == [it.key for it in items] and len(set(recorder.keys)) == 2
    assert sample_seed(0, recorder.keys[0], 0) != sample_seed(0, recorder.keys[1], 0)
    # one image under both keys: the key alone gives other samples, and the same greedy answer
    image = _Prepare(ProbeConfig(), tiny_backend.max_pixels)(items[0])
    same_image = [to_prompt(sample, image, it.key) for it in items]
    both = tiny_backend.generate(same_image, params)
    assert [t.token_ids for t in both[0]] != [t.token_ids for t in both[1]]
    greedy = tiny_backend.generate(same_image, SamplingParams(max_new_tokens=16))
    assert greedy[0][0].token_ids == greedy[1][0].token_ids


@pytest.mark.parametrize("arch", ["gemma3", "idefics3", "qwen2_5_vl", "smolvlm"])
def test_score_candidates_on_other_architectures(arch, tmp_path):
    """The cached prompt pass on the tiny random stock checkpoints: Gemma3 (sliding-window layers), Idefics3 /
    SmolVLM (crops), Qwen2.5-VL (multimodal RoPE: text positions after the prompt need its rope deltas; a
    batch of text-only prompts after one with images must not reuse them)."""
    import torch

    from catts.models.tiny.random import build

    torch.set_num_threads(1)
    backend = load_backend(build(arch, tmp_path / arch), batch_size=3)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for w, h in [(64, 64), (96, 48), (40, 80)]]
    arch_prompts = ([Prompt([im], f"What color is it? ({i})", key=f"p{i}") for i, im in enumerate(images)]
                    + [Prompt([], f"What is {i} + 3?", key=f"t{i}") for i in range(3)])
    traces = backend.generate(arch_prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0))
    # a random model samples image placeholder tokens too, which ``score`` would take for image slots
    slots = {getattr(backend.processor, name, None) for name in ("image_token_id", "video_token_id")}
    candidates = [[t for t in ts if not slots & set(t.token_ids)] + [ts[0].token_ids[:2], "red"] for ts in traces]
    assert sum(len(c) for c in candidates) >= 20
    together = backend.score_candidates(arch_prompts, candidates)
    flat = [(p, c) for p, cands in zip(arch_prompts, candidates) for c in cands]
    one_by_one = backend.score([p for p, _ in flat], [c for _, c in flat])
    for a, b in zip([t for ts in together for t in ts], one_by_one, strict=True):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=1e-4)


def test_backend_around_a_live_model_shares_it(prompts):
    """``from_model`` wraps a model as a trainer holds it: same object, left in train mode, same traces as a
    loaded backend, and a weight change is seen at once (no copy)."""
    import torch

    from catts.models.hf import TransformersBackend

    loaded = load_backend("tiny", batch_size=8)
    model, processor = loaded.model, loaded.processor
    model.train()
    live = TransformersBackend.from_model(model, processor, batch_size=8)
    assert live.model is model and model.training
    params = SamplingParams(max_new_tokens=32)
    a, b = live.generate(prompts[:4], params), loaded.generate(prompts[:4], params)
    assert [t[0].token_ids for t in a] == [t[0].token_ids for t in b] and model.training
    s = live.score(prompts[:2], [a[0][0].text, a[1][0].text])
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(0.5)  # the live model changes: so do its scores
    s2 = live.score(prompts[:2], [a[0][0].text, a[1][0].text])
    assert not np.allclose(s[0].logprobs, s2[0].logprobs)
