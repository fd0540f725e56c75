"""CDRL rewards (catts.train.rewards) by hand on worked examples, and original/noisy pairs (catts.train.pairs)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from catts.data import DataError, Sample, load_data
from catts.models.backend import Trace
from catts.train.rewards import (
    WORST_CALIBRATION,
    calibration_reward,
    cdrl_rewards,
    completion_confidence,
    completion_text,
    confidence_reward,
    format_reward,
    group_indices,
    minmax_cnorm,
    output_reward,
    perception_reward,
)

B = "\\boxed"


def cols(n, answer="B", answer_type="choice", options=("cat", "dog")):
    """The dataset columns TRL repeats once per completion."""
    return {"answer": [answer] * n, "answer_type": [answer_type] * n, "options": [list(options)] * n}


def cal(completions, confidence, pair_id=None, **kw):
    kw.setdefault("pair_id", pair_id or ["p"] * len(completions))
    return calibration_reward(completions, confidence=confidence, **cols(len(completions)), **kw)

# ---------------------------------------------------------------------------- format and output


def test_format_reward_exactly_one_closed_nonempty_box():
    completions = [
        f"The pet is a dog, so {B}{{B}}.",    # one closed box: 1
        f"{B}{{A}} no wait, {B}{{B}}",         # two boxes: 0
        f"so the answer is {B}{{B",            # unclosed: 0
        f"{B}{{A}} or maybe {B}{{B",           # a closed box then an unclosed one (two boxes): 0
        f"{B}{{ }}",                           # empty content: 0
        f"{B}{{\\text{{}}}}",                  # empty after strip_latex: 0
        "Answer: B",                           # no box: 0
        f"{B}{{\\frac{{1}}{{2}}}}",            # nested braces are content: 1
        "\\fbox{B}",                          # \fbox is a box too (scan_boxes): 1
    ]
    assert format_reward(completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_format_reward_answer_rule_asks_for_a_parsed_answer():
    """``rule="answer"``: one closed box that also holds an answer under the sample's rules; a boxed word that is
    none of a multiple-choice question's options scores 0, as the probe leaves it unparsed."""
    completions = [f"I see: red. {B}{{red}}", f"I see: red. {B}{{B}}", f"I see: brown. {B}{{brown}}",
                   f"{B}{{red}} {B}{{red}}", f"I see: 3 shapes. {B}{{3}}", f"I see: shapes. {B}{{three-ish}}"]
    answer = ["B", "B", "B", "B", "3", "3"]
    kinds = ["choice", "choice", "choice", "choice", "number", "number"]
    options = [["green", "red"]] * 4 + [[], []]
    assert format_reward(completions) == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert format_reward(completions, answer=answer, answer_type=kinds, options=options, rule="answer") == \
        [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="answer_type"):
        format_reward(completions, rule="answer")
    with pytest.raises(ValueError, match="rule"):
        format_reward(completions, rule="loose")
    funcs, _ = cdrl_rewards(0.5, 0.1, format_rule="answer")
    assert funcs[0].__name__ == "format_reward"      # TRL still logs it as the format term
    assert funcs[0](completions, answer=answer, answer_type=kinds, options=options) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_output_reward_strict_and_lenient():
    completions = [f"{B}{{B}}", f"{B}{{A}}", f"{B}{{B", f"{B}{{A}} then {B}{{B}}", "Answer: B", f"{B}{{dog}}"]
    # gold B: right box 1; wrong box 0; unclosed 0; two boxes (last is B) 0 under strict format; an unboxed
    # cue 0 under strict; the option's text boxed ("dog" is option B) 1
    assert output_reward(completions, **cols(6)) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # strict=False counts what catts's evaluation counts: the last box, the "Answer:" cue; unclosed stays 0
    assert output_reward(completions, **cols(6), strict=False) == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_output_reward_numbers_use_catts_answer_rules():
    completions = [f"{B}{{10}}", f"{B}{{1}}", f"{B}{{10.0}}", f"{B}{{x}}"]
    # "1" never matches "10"; 10.0 == 10; "x" is no number
    assert output_reward(completions, **cols(4, answer="10", answer_type="number", options=())) == [1, 0, 1, 0]


def test_conversational_completions():
    convo = [
        [{"role": "assistant", "content": f"{B}{{B}}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "It is "}, {"type": "text", "text": f"{B}{{B}}"}]}],
        [{"role": "assistant", "content": f"{B}{{A}}{B}{{B}}"}],
        [{"role": "assistant", "content": None}],
    ]
    assert completion_text(convo[1]) == f"It is {B}{{B}}"
    assert format_reward(convo) == [1.0, 1.0, 0.0, 0.0]
    assert output_reward(convo, **cols(4)) == [1.0, 1.0, 0.0, 0.0]
    # the same texts as strings give the same rewards
    assert format_reward([completion_text(c) for c in convo]) == format_reward(convo)

# ---------------------------------------------------------------------------- Cnorm and the calibration term


def test_minmax_cnorm_and_ties():
    # (v - min) / (max - min): min 10, max 12 -> 11 is 0.5
    assert minmax_cnorm([12.0, 10.0, 11.0]).tolist() == [1.0, 0.0, 0.5]
    # equal confidences: 0.5 for all, so no spurious signal; within tie_tol counts as equal; one value: 0.5
    assert minmax_cnorm([7.5, 7.5, 7.5]).tolist() == [0.5, 0.5, 0.5]
    assert minmax_cnorm([7.5, 7.5 + 1e-9]).tolist() == [0.5, 0.5]
    assert minmax_cnorm([3.0]).tolist() == [0.5]
    # a missing value gets 0.5 and does not take part: min 1, max 3 over the finite ones
    assert minmax_cnorm([1.0, math.nan, 3.0]).tolist() == [0.0, 0.5, 1.0]


def test_calibration_spec_worked_group():
    completions = [f"{B}{{B}}", f"{B}{{A}}", f"{B}{{B}}", f"{B}{{B"]   # right, wrong, right, unclosed
    conf = [12.0, 10.0, 11.0, 30.0]
    # Cnorm over the answered rollouts {12, 10, 11}: min 10, max 12 -> 1, 0, 0.5 (the unparsed 30 is left out)
    # K = (2z - 1) * Cnorm: right +1, wrong -0, right +0.5; unparsed: the worst, -1
    assert cal(completions, conf) == [1.0, 0.0, 0.5, WORST_CALIBRATION]


def test_calibration_equal_confidences():
    completions = [f"{B}{{B}}", f"{B}{{A}}", f"{B}{{B}}"]
    # all C equal -> Cnorm 0.5: right +0.5, wrong -0.5
    assert cal(completions, [7.5, 7.5, 7.5]) == [0.5, -0.5, 0.5]
    # all right and equal: identical rewards, no spurious signal
    assert cal([f"{B}{{B}}"] * 3, [7.5, 7.5, 7.5]) == [0.5, 0.5, 0.5]


def test_confident_right_answer_beats_the_reverse():
    right, wrong = f"{B}{{B}}", f"{B}{{A}}"
    good = cal([right, wrong], [12.0, 10.0])   # the right answer more confident: Cnorm 1, 0 -> K = +1, -0
    bad = cal([right, wrong], [10.0, 12.0])    # the reverse: Cnorm 0, 1 -> K = +0, -1
    assert good == [1.0, 0.0] and bad == [0.0, -1.0]
    assert sum(good) > sum(bad)
    assert good[0] > bad[0] and good[1] > bad[1]


def test_unparsed_gets_the_worst_calibration_however_low_its_confidence():
    # the prototype's exploit: an unparsed answer with C = 0, the lowest of the group, would have Cnorm 0 and the
    # best score a wrong answer can get (-0). Here it gets -1 in both variants, and is left out of min and max.
    completions = [f"{B}{{B", f"{B}{{A}}", f"{B}{{B}}"]      # unclosed, wrong, right
    conf = [0.0, 5.0, 9.0]
    # answered {5, 9}: wrong Cnorm 0 -> -0; right Cnorm 1 -> +1
    assert cal(completions, conf) == [-1.0, 0.0, 1.0]
    # brier: wrong p=0 -> 1 - 2 (0 - 0)^2 = 1; right p=1 -> 1
    assert cal(completions, conf, calibration="brier") == [-1.0, 1.0, 1.0]
    # the unclosed box: format 0, output 0 too
    assert format_reward(completions[:1]) == [0.0] and output_reward(completions[:1], **cols(1)) == [0.0]
    # no box at all, and two boxes (strict), are unparsed as well
    assert cal(["I think B", f"{B}{{A}}{B}{{B}}", f"{B}{{B}}"], [1.0, 2.0, 3.0]) == [-1.0, -1.0, 0.5]


def test_brier_variant():
    right, wrong = f"{B}{{B}}", f"{B}{{A}}"
    # Cnorm of C [12, 10, 11, 12] = [1, 0, 0.5, 1]; 1 - 2 (p - z)^2:
    # right p=1: 1; wrong p=0: 1; right p=0.5: 1 - 2*0.25 = 0.5; wrong p=1: 1 - 2 = -1
    assert cal([right, wrong, right, wrong], [12.0, 10.0, 11.0, 12.0], calibration="brier") == [1.0, 1.0, 0.5, -1.0]
    # probability-valued confidence used as it is (normalize="none"): right 0.8 -> 1 - 2*0.04 = 0.92,
    # wrong 0.8 -> 1 - 2*0.64 = -0.28, no group needed
    out = calibration_reward([right, wrong], confidence=[0.8, 0.8], calibration="brier", normalize="none", **cols(2))
    assert out == pytest.approx([0.92, -0.28])
    # the spec term with normalize="none": right +0.8, wrong -0.8
    out = calibration_reward([right, wrong], confidence=[0.8, 0.8], normalize="none", **cols(2))
    assert out == pytest.approx([0.8, -0.8])
    # C is no probability: normalize="none" refuses it
    with pytest.raises(ValueError, match="probability"):
        calibration_reward([right], confidence=[12.0], normalize="none", **cols(1))

# ---------------------------------------------------------------------------- groups


def test_blocks_of_G_and_pair_ids():
    right = f"{B}{{B}}"
    # two blocks of G=2: [1, 2] and [100, 200] are each normalised to [0, 1] -> K = [0, 1, 0, 1]
    assert cal([right] * 4, [1.0, 2.0, 100.0, 200.0], pair_id=None, num_generations=2) == [0.0, 1.0, 0.0, 1.0]
    # one group of 4 would give (C - 1) / 199: [0, 0.005, 0.497, 1]
    assert cal([right] * 4, [1.0, 2.0, 100.0, 200.0])[1] == pytest.approx(1 / 199)
    # pair ids group wherever they stand: a, b, a, b
    assert cal([right] * 4, [1.0, 100.0, 2.0, 200.0], pair_id=["a", "b", "a", "b"]) == [0.0, 0.0, 1.0, 1.0]
    assert group_indices(4, pair_id=["a", "b", "a", "b"]) == [[0, 2], [1, 3]]
    assert group_indices(4, num_generations=2) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="split"):     # a block holding two pair ids: a partial group
        group_indices(4, pair_id=["a", "b", "b", "c"], num_generations=2)
    with pytest.raises(ValueError, match="whole number"):
        group_indices(5, num_generations=2)
    with pytest.raises(ValueError, match="groups"):
        group_indices(4)


def test_column_lengths_are_checked():
    with pytest.raises(ValueError, match="confidence"):
        cal([f"{B}{{B}}"] * 2, [1.0])
    with pytest.raises(ValueError, match="confidence"):
        calibration_reward([f"{B}{{B}}"], pair_id=["p"], **cols(1))

# ---------------------------------------------------------------------------- perception term


def test_perception_term_sign_and_confidence_reward():
    right = f"{B}{{B}}"
    # beta 0.1: C - C' = 10 - 8 = 2 -> tanh(0.2) = 0.19738 (more confident on the original: rewarded);
    # 8 - 10 = -2 -> -0.19738 (more confident on the noised image: penalised)
    p = perception_reward([right, right], confidence=[10.0, 8.0], noisy_confidence=[8.0, 10.0], beta=0.1)
    assert p == pytest.approx([math.tanh(0.2), -math.tanh(0.2)])
    assert p[0] > 0 > p[1]
    # without C' the term does not apply
    assert perception_reward([right], confidence=[10.0], beta=0.1) == [None]
    assert perception_reward([right], confidence=[10.0], noisy_confidence=[None], beta=0.1) == [None]
    # R_conf = alpha * tanh(beta (C - C')) + K; Cnorm of [10, 8] = [1, 0] -> K = [1, 0]
    r = confidence_reward([right, right], confidence=[10.0, 8.0], noisy_confidence=[8.0, 10.0], pair_id=["p", "p"],
                          alpha=0.5, beta=0.1, **cols(2))
    assert r == pytest.approx([1 + 0.5 * math.tanh(0.2), 0 - 0.5 * math.tanh(0.2)])
    # no C' column: R_conf = K
    assert confidence_reward([right, right], confidence=[10.0, 8.0], pair_id=["p", "p"], alpha=0.5, beta=0.1,
                             **cols(2)) == [1.0, 0.0]

# ---------------------------------------------------------------------------- the set for TRL


def _trl_kwargs(n, metrics):
    """What GRPOTrainer passes besides the columns."""
    return {"prompts": [[{"role": "user", "content": "q"}]] * n, "completion_ids": [[1, 2]] * n,
            "trainer_state": None, "log_extra": lambda column, values: None,
            "log_metric": lambda name, value: metrics.append((name, value)),
            "image": [None] * n, "noisy_image": [None] * n, "sample_id": ["s"] * n}


@pytest.mark.parametrize("calibration", ["spec", "brier"])
def test_cdrl_rewards_called_as_trl_calls_them(calibration):
    completions = [[{"role": "assistant", "content": t}] for t in (f"{B}{{B}}", f"{B}{{A}}", f"{B}{{B", "B")]
    columns = {**cols(4), "pair_id": ["p"] * 4, "confidence": [12.0, 10.0, 11.0, 3.0],
               "noisy_confidence": [11.0, 10.0, 12.0, 3.0]}
    totals = []
    for split in (True, False):
        metrics = []
        funcs, weights = cdrl_rewards(0.5, 0.1, calibration=calibration, num_generations=4, split=split)
        outs = [f(completions=completions, **columns, **_trl_kwargs(4, metrics)) for f in funcs]
        assert all(len(o) == 4 for o in outs)
        totals.append(np.sum([w * np.asarray(o, dtype=float) for w, o in zip(weights, outs)], axis=0))
        assert ("cdrl/unparsed", 0.5) in metrics and ("cdrl/tied_groups", 0.0) in metrics
        assert pickle.loads(pickle.dumps(funcs))[-1].__name__ == funcs[-1].__name__
    assert totals[0] == pytest.approx(totals[1])
    # by hand (spec): format [1, 1, 0, 0]; output [1, 0, 0, 0]; Cnorm over answered {12, 10} = [1, 0];
    # perception 0.5 tanh(0.1 * [1, 0, -1, 0]); K spec [1, -0, -1, -1], brier [1, 1, -1, -1]
    k = [1.0, 0.0, -1.0, -1.0] if calibration == "spec" else [1.0, 1.0, -1.0, -1.0]
    t = 0.5 * math.tanh(0.1)
    assert totals[0] == pytest.approx([3 + t, 1 + k[1], -1 - t, -1])


def test_reward_names_for_trl():
    funcs, weights = cdrl_rewards(0.25, 0.1)
    names = ["format_reward", "output_reward", "perception_reward", "calibration_reward"]
    assert [f.__name__ for f in funcs] == names and weights == [1.0, 1.0, 0.25, 1.0]
    funcs, weights = cdrl_rewards(0.25, 0.1, split=False)
    assert [f.__name__ for f in funcs] == ["format_reward", "output_reward", "confidence_reward"]
    assert weights == [1.0, 1.0, 1.0]
    assert cdrl_rewards(0.25, 0.1, calibration_weight=2.0).weights == [1.0, 1.0, 0.25, 2.0]
    assert cdrl_rewards(0.25, 0.1, format_weight=3.0).weights == [3.0, 1.0, 0.25, 1.0]
    assert cdrl_rewards(0.25, 0.1, format_weight=3.0, split=False).weights == [3.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="split=True"):
        cdrl_rewards(0.25, 0.1, calibration_weight=2.0, split=False)


def test_trl_reads_the_reward_names():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    funcs, _ = cdrl_rewards(0.25, 0.1)
    names = ["format_reward", "output_reward", "perception_reward", "calibration_reward"]
    assert [trl_utils.get_callable_name(f) for f in funcs] == names

# ---------------------------------------------------------------------------- confidences


def test_completion_confidence():
    # uniform over the top 4 at both steps: c_t = -mean(log 1/4) = log 4
    top = np.log(np.full((2, 4), 0.25))
    assert completion_confidence(top) == pytest.approx(math.log(4))
    # c = -(-0.1 - 3.0) / 2 = 1.55
    assert completion_confidence(np.array([[-0.1, -3.0]])) == pytest.approx(1.55)
    # a choice trace "\boxed{B}": at the letter's step p(B) = 0.6, p(A) = 0.3 -> renormalised 0.6 / 0.9 = 2/3
    text = f"{B}{{B}}"
    lp = np.array([-0.01, math.log(0.6), -0.02])
    trace = Trace(text=text, token_ids=[1, 2, 3], logprobs=lp,
                  top_logprobs=np.array([[-0.01, -5.0], [math.log(0.6), math.log(0.3)], [-0.02, -4.0]]),
                  top_ids=np.array([[1, 9], [2, 8], [3, 7]]), tokens=[f"{B}{{", "B", "}"],
                  top_tokens=[[f"{B}{{", "x"], ["B", "A"], ["}", "y"]])
    assert completion_confidence(trace, "answer_prob", answer_type="choice", options=["cat", "dog"]) == \
        pytest.approx(2 / 3)
    # trace probability exp(mean log p) = exp((-0.01 + log 0.6 - 0.02) / 3)
    assert completion_confidence(trace, "trace_prob") == pytest.approx(math.exp(lp.mean()))
    assert completion_confidence(trace, "sequence_prob") == pytest.approx(math.exp(lp.sum()))
    assert completion_confidence(trace) == pytest.approx(-trace.top_logprobs.mean(axis=1).mean())
    unparsed = Trace(text="B", token_ids=[1], logprobs=np.array([-0.1]), top_logprobs=np.array([[-0.1, -2.0]]),
                     top_ids=np.array([[1, 2]]), tokens=["B"], top_tokens=[["B", "A"]])
    assert math.isnan(completion_confidence(unparsed, "answer_prob", answer_type="number"))
    with pytest.raises(ValueError, match="Trace"):
        completion_confidence(top, "answer_prob")
    with pytest.raises(ValueError, match="kind"):
        completion_confidence(top, "nmlp")

# ---------------------------------------------------------------------------- pairs


@pytest.fixture(scope="module")
def shapes():
    pytest.importorskip("datasets", reason="build_pairs needs datasets (the optional train extra)")
    return load_data("shapes:test")[:3]


def _pixels(im):
    return np.asarray(im.convert("RGB"))


def test_build_pairs_columns_and_pairs(shapes):
    from catts.prompts import build_prompt
    from catts.train.pairs import COLUMNS, build_pairs

    ds = build_pairs(shapes)
    assert ds.column_names == list(COLUMNS) and len(ds) == 3
    for s, row in zip(shapes, ds):
        assert row["prompt"][0]["role"] == "user"
        assert [p["type"] for p in row["prompt"][0]["content"]] == ["image", "text"]
        assert row["prompt"][0]["content"][1]["text"] == build_prompt(s)
        assert (row["answer"], row["answer_type"], row["options"]) == (s.answer, s.answer_type, s.options)
        assert row["pair_id"] == s.id and row["noise"] == "key_region" and row["level"] == 500
        original = _pixels(s.load_images()[0])
        # the pair differs in the noisy image only: the image is the sample's, losslessly
        assert np.array_equal(_pixels(row["image"]), original)
        noisy = _pixels(row["noisy_image"])
        assert noisy.shape == original.shape and not np.array_equal(noisy, original)
        # key-region noise touches part of the image only
        assert 0 < np.any(noisy != original, axis=-1).mean() < 1


def test_build_pairs_deterministic_in_seed(shapes):
    from catts.train.pairs import build_pairs

    a, b = build_pairs(shapes[:2], seed=3), build_pairs(shapes[:2], seed=3)
    c = build_pairs(shapes[:2], seed=4)
    for x, y, z in zip(a, b, c):
        assert np.array_equal(_pixels(x["noisy_image"]), _pixels(y["noisy_image"]))
        assert not np.array_equal(_pixels(x["noisy_image"]), _pixels(z["noisy_image"]))
    # whole-image diffusion at several levels: one row per level, pair ids name the level
    d = build_pairs(shapes[:1], noise="diffusion", level=[100, 999])
    assert d["pair_id"] == [f"{shapes[0].id}@100", f"{shapes[0].id}@999"] and d["level"] == [100, 999]
    assert np.any(_pixels(d[0]["noisy_image"]) != _pixels(d[0]["image"]), axis=-1).mean() > 0.5


def test_build_pairs_original_levels(shapes):
    from catts.perception.degrade import degrade
    from catts.train.pairs import build_pairs

    ds = build_pairs(shapes[:1], noise="diffusion", level=856, original_levels=[0, 999])
    s = shapes[0]
    assert ds["pair_id"] == [f"{s.id}@0/856", f"{s.id}@999/856"] and ds["original_level"] == ["0", "999"]
    clean = _pixels(s.load_images()[0])
    assert np.array_equal(_pixels(ds[0]["image"]), clean)
    # the degraded original is the clean image at t = 999 (its own noise), the noisy image noises it further
    expected = _pixels(degrade(s.load_images()[0], "diffusion", 999, seed=0, key=f"{s.id}/original"))
    assert np.array_equal(_pixels(ds[1]["image"]), expected)
    assert not np.array_equal(_pixels(ds[1]["noisy_image"]), expected)
    with pytest.raises(ValueError, match="original level"):
        build_pairs(shapes[:1], original_levels=[])
    # any degradation as "kind:level": pure noise keeps nothing of the image
    ds = build_pairs(shapes[:1], noise="diffusion", level=856, original_levels=["pure_noise:1"])
    assert ds["original_level"] == ["pure_noise:1"] and ds["pair_id"] == [s.id]   # one original: the plain sample id
    expected = _pixels(degrade(s.load_images()[0], "pure_noise", 1, seed=0, key=f"{s.id}/original"))
    assert np.array_equal(_pixels(ds[0]["image"]), expected)
    for bad in (["pure_noise:2"], ["fog:1"], ["clean"], ["diffusion:L8"]):
        with pytest.raises(ValueError, match="original level"):
            build_pairs(shapes[:1], original_levels=bad)
    # a label is clean when it names level 0 of any kind, and its rows then hold the clean image itself
    from catts.train.pairs import is_clean_original
    assert [is_clean_original(t) for t in ("0", "diffusion:0", "pure_noise:0", "999", "pure_noise:1")] == \
        [True, True, True, False, False]
    ds = build_pairs(shapes[:1], noise="diffusion", level=856, original_levels=["diffusion:0", "pure_noise:0"])
    assert all(np.array_equal(_pixels(row["image"]), clean) for row in ds)


def test_build_pairs_repeated_question_on_one_image(shapes):
    from dataclasses import replace

    from catts.train.pairs import build_pairs
    from catts.train.rollout import PairLookup

    s = shapes[0]
    twin = replace(s, id=s.id + "-twin")
    ds = build_pairs([s, twin])
    assert ds["sample_id"] == [s.id]       # one rollout prompt; the rollout could not tell the two apart
    PairLookup(ds)
    other = ("B" if s.answer == "A" else "A") if s.answer_type == "choice" else s.answer + "-not"
    clash = replace(s, id=s.id + "-clash", answer=other)
    errors: list[dict] = []
    assert build_pairs([s, clash], errors=errors)["sample_id"] == [s.id]
    assert errors[0]["id"] == clash.id and "another answer" in errors[0]["error"]
    with pytest.raises(DataError, match="another answer"):
        build_pairs([s, clash])


def test_build_pairs_skips_bad_images(shapes):
    from catts.train.pairs import build_pairs

    bad = Sample(id="broken-1", images=[b"not an image"], question="q?", answer="3", answer_type="number")
    errors: list[dict] = []
    ds = build_pairs([shapes[0], bad], errors=errors)
    assert ds["sample_id"] == [shapes[0].id]
    assert len(errors) == 1 and errors[0]["id"] == "broken-1" and "broken-1" in errors[0]["error"]
    with pytest.raises(DataError, match="broken-1"):
        build_pairs([bad])


def test_pairs_row_feeds_trl(shapes):
    """TRL fills the prompt's image placeholder from the image column, and the other columns reach the rewards."""
    data_utils = pytest.importorskip("trl.data_utils")
    from catts.train.pairs import build_pairs

    row = build_pairs(shapes[:1])[0]
    msgs = data_utils.prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    assert msgs[0]["content"][0]["image"] is row["image"]
    funcs, _ = cdrl_rewards(0.5, 0.1, num_generations=2)
    columns = {k: [row[k]] * 2 for k in row if k != "prompt"}
    columns.update(confidence=[9.0, 8.0], noisy_confidence=[8.0, 8.0])
    right = f"{B}{{{row['answer']}}}"
    outs = [f(prompts=[row["prompt"]] * 2, completions=[right, right], completion_ids=[[1]] * 2, **columns)
            for f in funcs]
    assert outs[0] == [1.0, 1.0] and outs[1] == [1.0, 1.0] and outs[3] == [1.0, 0.0]


def test_grpo_trainer_one_step_with_cdrl_rewards(tmp_path):
    """One GRPO step of the embedded tiny model on CPU: TRL calls the CDRL rewards with the pair columns and logs
    each under its name. (Confidences are per-prompt dataset columns here; the rollout will supply them.)"""
    trl = pytest.importorskip("trl")
    from transformers import AutoProcessor

    from catts.models import resolve_model_path
    from catts.train.pairs import build_pairs

    path = resolve_model_path("tiny")
    ds = build_pairs(load_data("shapes:test")[:4])
    ds = ds.add_column("confidence", [5.0, 6.0, 7.0, 8.0]).add_column("noisy_confidence", [4.0, 6.0, 8.0, 8.0])
    funcs, weights = cdrl_rewards(0.5, 0.1, num_generations=2)
    seen: list[dict] = []

    def spy(completions, **kw):
        seen.append({"completions": completions, **kw})
        return [None] * len(completions)

    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=16, max_steps=1, report_to=[], logging_steps=1, use_cpu=True,
                          save_strategy="no", reward_weights=[*weights, 1.0])
    trainer = trl.GRPOTrainer(model=str(path), reward_funcs=[*funcs, spy], args=args, train_dataset=ds,
                              processing_class=AutoProcessor.from_pretrained(path))
    trainer.train()
    call = seen[0]
    assert isinstance(call["completions"][0], list) and call["completions"][0][0]["role"] == "assistant"
    assert {"answer", "answer_type", "options", "pair_id", "noisy_image", "confidence"} <= set(call)
    assert call["pair_id"][0] == call["pair_id"][1] and call["pair_id"][1] != call["pair_id"][2]  # blocks of G
    logged = trainer.state.log_history[0]
    for name in ("format_reward", "output_reward", "perception_reward", "calibration_reward"):
        assert f"rewards/{name}/mean" in logged
    assert "cdrl/unparsed" in logged and "cdrl/tied_groups" in logged
