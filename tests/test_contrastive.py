"""Contrastive decoding (visual self-check): the backend's fast path against the slow reference, on the
real tiny model with diffusion-noised images; and the top-k approximation of API backends."""

import numpy as np
import pytest

from catts.jobs.ask import to_prompt
from catts.models import load_backend
from catts.models.backend import ContrastiveParams, SamplingParams
from catts.models.contrastive import approx_contrastive_step, contrastive_reference, contrastive_step
from catts.perception.degrade import degrade


@pytest.fixture(scope="module")
def pairs(shapes_test, easyvqa_test):
    """As CA-TTS's self-check meets them: an image the model sees (here diffusion-noised at t = 571, where
    the tiny model is unsure), and its noised copy at t = 500."""
    samples = list(shapes_test[:5]) + list(easyvqa_test[:3])
    seen = [[degrade(im, "diffusion", 571, seed=0, key=s.id) for im in s.load_images()] for s in samples]
    noised = [to_prompt(s, [degrade(im, "diffusion", 500, seed=1, key=s.id) for im in ims])
              for s, ims in zip(samples, seen)]
    return [to_prompt(s, ims) for s, ims in zip(samples, seen)], noised


def _same(fast, slow, steps=None):
    for f, s in zip(fast, slow, strict=True):
        assert f.token_ids[:steps] == s.token_ids[:steps]
        np.testing.assert_allclose(f.meta["contrastive_scores"][:steps], s.meta["contrastive_scores"][:steps],
                                   atol=1e-4)
        np.testing.assert_allclose(f.logprobs[:steps], s.logprobs[:steps], atol=1e-4)
        np.testing.assert_allclose(f.top_logprobs[:steps], s.top_logprobs[:steps], atol=1e-4)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_fast_path_equals_the_reference(tiny_backend, pairs, alpha):
    prompts, noised = pairs
    params = ContrastiveParams(alpha=alpha, max_new_tokens=14)
    fast = tiny_backend.contrastive_generate(prompts, noised, params)
    _same(fast, contrastive_reference(tiny_backend, prompts, noised, params))
    for t in fast:
        assert t.meta["contrastive"] == "exact" and t.meta["vocab"] == tiny_backend.vocab_fingerprint
        assert len(t.meta["contrastive_scores"]) == t.num_tokens and t.logprob_source == "raw"


def test_contrast_changes_the_answer_path(tiny_backend, pairs):
    """At alpha = 1 the noised image pushes at least one trace off the greedy path (else the tests above
    would only show that greedy equals greedy)."""
    prompts, noised = pairs
    greedy = tiny_backend.generate(prompts, SamplingParams(max_new_tokens=48))
    fast = tiny_backend.contrastive_generate(prompts, noised, ContrastiveParams(alpha=1.0, max_new_tokens=48))
    assert any(f.token_ids != g[0].token_ids for f, g in zip(fast, greedy))
    # the recorded log-probabilities are the original image's raw ones: the chosen token may not be its top-1
    for f in fast:
        assert np.all(f.logprobs <= f.top_logprobs[:, 0] + 1e-6)


def test_batch_sizes_1_and_8_agree(tiny_backend, pairs):
    prompts, noised = pairs
    params = ContrastiveParams(max_new_tokens=48)
    one = load_backend("tiny", batch_size=1).contrastive_generate(prompts, noised, params)  # one pair a call
    eight = tiny_backend.contrastive_generate(prompts, noised, params)  # four pairs a call
    _same(one, eight)
    assert [t.num_tokens for t in one] == [t.num_tokens for t in eight]


def test_alpha_0_is_greedy(tiny_backend, pairs):
    prompts, noised = pairs
    greedy = tiny_backend.generate(prompts, SamplingParams(max_new_tokens=48))
    plain = tiny_backend.contrastive_generate(prompts, noised, ContrastiveParams(alpha=0.0, max_new_tokens=48))
    for g, c in zip(greedy, plain):
        assert c.token_ids == g[0].token_ids and c.finish_reason == g[0].finish_reason
        np.testing.assert_allclose(c.logprobs, g[0].logprobs, atol=1e-5)


def test_stop_strings_cut_the_trace(tiny_backend, pairs):
    prompts, noised = pairs
    full = tiny_backend.contrastive_generate(prompts, noised, ContrastiveParams(max_new_tokens=48))
    cut = tiny_backend.contrastive_generate(prompts, noised, ContrastiveParams(max_new_tokens=48, stop=("\\boxed",)))
    for f, c in zip(full, cut):
        assert c.token_ids == f.token_ids[:c.num_tokens] and len(c.meta["contrastive_scores"]) == c.num_tokens
        if "\\boxed" in f.text:
            assert c.text.endswith("\\boxed")


def test_params_validation():
    with pytest.raises(ValueError):
        ContrastiveParams(alpha=-1)
    with pytest.raises(ValueError):
        ContrastiveParams(beta=1.5)
    with pytest.raises(ValueError):
        ContrastiveParams(stop="\\boxed")


def _log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def test_exact_step_by_hand():
    lp_i = np.log(np.array([0.5, 0.3, 0.16, 0.04]))
    lp_n = np.log(np.array([0.7, 0.1, 0.1, 0.1]))
    s = contrastive_step(lp_i, lp_n, alpha=0.5, beta=0.1)
    assert s[3] == -np.inf  # 0.04 < 0.1 * 0.5: cut
    np.testing.assert_allclose(s[:3], 1.5 * lp_i[:3] - 0.5 * lp_n[:3])
    assert int(np.argmax(s)) == 1  # the token the noised image does not explain wins over the top-1


def test_approx_step_matches_exact_when_lists_hold_the_answer():
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(200):
        lp_i = _log_softmax(rng.normal(0, 3, 50))
        lp_n = _log_softmax(lp_i + rng.normal(0, 1.5, 50))
        exact = contrastive_step(lp_i, lp_n, 0.5, 0.1)
        top_i, top_n = np.argsort(-lp_i)[:20], np.argsort(-lp_n)[:20]
        # the whole vocabulary as "top-k": the approximation is exact
        full = approx_contrastive_step(range(50), lp_i, range(50), lp_n, 0.5, 0.1)
        assert full[0] == int(np.argmax(exact)) and full[1] == pytest.approx(exact.max(), abs=1e-9)
        tok, score = approx_contrastive_step(top_i, lp_i[top_i], top_n, lp_n[top_n], 0.5, 0.1)
        assert tok in top_i and score <= exact[tok] + 1e-9  # the k-th noised log-prob bounds from above
        if tok in top_n:
            assert score == pytest.approx(exact[tok], abs=1e-9)
        agree += tok == int(np.argmax(exact))
    assert agree >= 180


def test_approx_step_bounds_and_drops():
    # token 7 is missing from the noised list: its noised log-prob is taken as the list's k-th (-3.0)
    tok, score = approx_contrastive_step([5, 7], [-0.5, -0.9], [5, 9], [-0.1, -3.0], alpha=0.5, beta=0.1)
    assert tok == 7 and score == pytest.approx(1.5 * -0.9 - 0.5 * -3.0)
    # token 9 is only in the noised list (p under the original image unknown): never chosen
    tok, _ = approx_contrastive_step([5], [-0.1], [9, 5], [-5.0, -0.1], alpha=0.5, beta=0.1)
    assert tok == 5
