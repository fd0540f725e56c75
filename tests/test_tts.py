"""`catts tts` on the real tiny models (base ``tiny``, expert ``tiny-expert``): batch-size independence, nested
sample waves, a voter that never parses, the final vote recomputed by hand, resume after a kill, the command
line and the gate's bookkeeping. No mocks: the only wrapper (``Counting``) passes every call to the real model.

The questions are chosen for spread at diffusion t = 571 (measured with 48 new tokens, seed 0): shapes
question 00000-2 ("How many objects", samples 3/2/2/2: the gate needs all four samples at 0.99 but two at 0.5)
and easyvqa 00001 (samples gray/brown/gray/brown, the expert prefers brown, reflection and self-check disagree:
every module moves the final vote).
"""

import json
import math
import shutil
from collections import Counter

import pytest
from typer.testing import CliRunner

from catts.cli import app
from catts.jobs.probe import Dataset
from catts.jobs.tts import GATE_THRESHOLDS, TTSConfig, run_tts
from catts.tts import prompts as P
from catts.tts.modules import RoleTokens

LEVELS = ["diffusion:0,571"]
CFG = {"data": ["shapes:test", "easyvqa:test"], "degrade": LEVELS, "n": 4, "scaling": [2],
       "tokens": RoleTokens(base=48)}
TAU = 0.5


def datasets(shapes_test, easyvqa_test):
    return [Dataset("shapes:test", [shapes_test[2]]), Dataset("easyvqa:test", easyvqa_test[:2])]


def read(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def without_seconds(records: list[dict]) -> dict[str, dict]:
    return {r["key"]: {k: v for k, v in r.items() if k != "seconds"} for r in records}


@pytest.fixture(scope="module")
def expert_backend():
    from catts.models import load_backend

    return load_backend("tiny-expert", batch_size=8)


@pytest.fixture(scope="module")
def main_run(tiny_backend, expert_backend, shapes_test, easyvqa_test, tmp_path_factory):
    """n = 4 with the N = 2 scaling point, ablations on, expert = tiny-expert plus the base-as-expert ablation."""
    out = tmp_path_factory.mktemp("tts")
    summary = run_tts(tiny_backend, {"expert": expert_backend, "base": tiny_backend}, TTSConfig(**CFG), out,
                      datasets(shapes_test, easyvqa_test))
    return out, summary, read(out)


def assert_same(a, b, where="record"):
    """Equal, except that floats may differ by float32 rounding (a batch's padding changes the sums' order);
    answers, texts, token counts and every other non-float value must be identical."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def record(records, data, sample_id, level) -> dict:
    key = next(r["key"] for r in records if r["data"] == data and r["id"] == sample_id and r["level"] == level)
    return next(r for r in records if r["key"] == key)


# ---------------------------------------------------------------- 1. batch size

def test_records_do_not_depend_on_the_batch_size(main_run, shapes_test, easyvqa_test, tmp_path):
    from catts.models import load_backend

    _, _, records8 = main_run
    base1, expert1 = load_backend("tiny", batch_size=1), load_backend("tiny-expert", batch_size=1)
    run_tts(base1, {"expert": expert1, "base": base1}, TTSConfig(**CFG), tmp_path, datasets(shapes_test, easyvqa_test))
    records1 = read(tmp_path)
    assert len(records8) == 6 and all(not r["errors"] for r in records8)
    # the comparison is not trivial: some question has samples that disagree, some reflection changes an answer
    assert any(len({s["prediction"] for s in r["samples"]}) > 1 for r in records8)
    assert any(x["answer"] != x["leader"] for r in records8 for x in r["reflections"])
    a, b = without_seconds(records8), without_seconds(records1)
    assert list(a) == list(b)
    for key in a:
        for field in ("methods", "ablations", "reflections", "self_check"):
            assert_same(a[key][field], b[key][field], f"{key}: {field}")
        assert [s["prediction"] for s in a[key]["samples"]] == [s["prediction"] for s in b[key]["samples"]]
        assert [s["text"] for s in a[key]["samples"]] == [s["text"] for s in b[key]["samples"]]
        assert_same(a[key], b[key], key)  # everything else too (plans, voter, gate, scaling, confidences)


# ---------------------------------------------------------------- 2. nested waves

def test_samples_are_nested_across_n(main_run, tiny_backend, expert_backend, shapes_test, easyvqa_test, tmp_path):
    _, _, records4 = main_run
    run_tts(tiny_backend, {"expert": expert_backend}, TTSConfig(**{**CFG, "n": 2, "scaling": [], "ablations": False}),
            tmp_path, datasets(shapes_test, easyvqa_test))
    records2 = {r["key"]: r for r in read(tmp_path)}
    assert len(records2) == 6
    for r4 in records4:
        r2 = records2[r4["key"]]
        assert len(r4["samples"]) == 4 and len(r2["samples"]) == 2
        # the same draws (the batch differs: 2 rows per question, not 4, so floats agree up to rounding)
        assert [s["text"] for s in r2["samples"]] == [s["text"] for s in r4["samples"][:2]]
        assert_same(r2["samples"], r4["samples"][:2], r4["key"])
        assert_same([r2["greedy"], r2["self_check"]], [r4["greedy"], r4["self_check"]], r4["key"])
        at2 = r4["scaling"]["2"]
        for name in ("pass@1", "majority", "best-of-n", "deepconf"):
            assert_same(at2[name], r2["methods"][name], f"{r4['key']}: {name}")
        # CA-TTS too (its voter scores and its reflection's first turn are read from all 4 samples of the n = 4
        # run, see Question.box_of and modules._first_answer; on these questions they agree with n = 2)
        assert_same(at2["ca-tts"], r2["methods"]["ca-tts"], f"{r4['key']}: ca-tts")
    # on the shapes question the majority at N = 2 (3, 2: a tie, first answer wins) is not the one at N = 4
    r4 = record(records4, "shapes:test", "shapes-test-00000-2", 571)
    assert [s["prediction"] for s in r4["samples"]] == ["3", "2", "2", "2"]
    assert r4["scaling"]["2"]["majority"]["answer"] == "3" and r4["methods"]["majority"]["answer"] == "2"
    assert r4["scaling"]["2"]["majority"]["generated_tokens"] == sum(s["num_tokens"] for s in r4["samples"][:2])


# ---------------------------------------------------------------- 3. a voter that never parses

@pytest.mark.parametrize("reply,n,expected", [
    ("[0.2, 0.8]", 2, [0.2, 0.8]),
    ("[1, 3]", 2, [0.25, 0.75]),  # renormalised
    ("Sure. The first is likelier: [0.7, 0.2, 0.1]", 3, [0.7, 0.2, 0.1]),
    ("[oops] then [0.5, 0.5]", 2, [0.5, 0.5]),  # the last array that is JSON
    ("[0, 1]", 2, [0.0, 1.0]),
    ("[0.5, 0.5]", 3, None),  # wrong length
    ("[0.5, 0.5] and later [1]", 2, None),  # the last array decides
    ("[-0.2, 1.2]", 2, None),  # negative
    ("[NaN, 1]", 2, None),
    ("[Infinity, 1]", 2, None),
    ("[0, 0]", 2, None),  # no mass
    ('["0.5", "0.5"]', 2, None),  # strings
    ("[true, false]", 2, None),  # booleans are no numbers
    ("0.5, 0.5", 2, None),  # not JSON
    ("", 1, None),
    ("\\boxed{gray}", 1, None),
])
def test_parse_probabilities(reply, n, expected):
    got = P.parse_probabilities(reply, n)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected) and sum(got) == pytest.approx(1.0)


@pytest.mark.parametrize("reply,expected", [
    ('["reflection", "self-check", "self-consistency"]', ["reflection", "self-check", "self-consistency"]),
    ('Plan: ["self-check", "self-consistency", "reflection"]', ["self-check", "self-consistency", "reflection"]),
    (P.plan_text(), list(P.DEFAULT_PLAN)),
    ('["reflection", "reflection", "self-check"]', None),  # a repeat, one missing
    ('["reflection", "self-check"]', None),
    ('["reflection", "self-check", "self-consistency", "reflection"]', None),
    ('["reflection", "self-check", "voting"]', None),
    ("self-consistency, reflection, self-check", None),  # not JSON
    ('["self-check", "self-consistency", "reflection"] then [1, 2, 3]', None),  # the last array decides
])
def test_parse_plan(reply, expected):
    assert P.parse_plan(reply) == expected


def internal(r: dict, n: int) -> dict:
    """V_int: the samples' mean confidence C summed per answer, normalised (plain Python)."""
    v_int: dict = {}
    for s in r["samples"][:n]:
        if s["prediction"] is not None:
            v_int[s["prediction"]] = v_int.get(s["prediction"], 0.0) + s["confidence"]["mean"]
    total = sum(v_int.values())
    return {k: v / total for k, v in v_int.items()} if total > 0 else {}


def voter_shares(r: dict, candidates, expert: str = "expert") -> dict:
    """c: the expert's log-likelihoods of the candidates, softmaxed over them."""
    ll = r["voter"]["loglik"][expert]
    z = sum(math.exp(ll[k]) for k in candidates)
    return {k: math.exp(ll[k]) / z for k in candidates}


def sc_leader(r: dict, n: int):
    v_int = internal(r, n)
    if not v_int:
        return None
    c = voter_shares(r, v_int)
    before = {k: v_int[k] + TAU * c[k] for k in v_int}
    return max(before, key=before.get)


def hand_vote(r: dict, n: int, expert: str = "expert", voter: str = "likelihood") -> tuple:
    """The final vote from the record's own fields, in plain Python (spec section 6):
    V = V_int + 0.5 c + 0.5 1[reflection] + 0.5 1[self-check]; answer = argmax; confidence = its share."""
    v_int = internal(r, n)
    assert v_int
    c = voter_shares(r, v_int, expert) if voter == "likelihood" else {}
    assert r["plan"][expert]["order"] == list(P.DEFAULT_PLAN)  # the reflection's leader is taken before the check
    before = {k: v_int[k] + TAU * c.get(k, 0.0) for k in v_int}
    leader = max(before, key=before.get)
    reflection = next(x for x in r["reflections"] if x["expert"] == expert and x["leader"] == leader)
    V = dict(before)
    for answer in (reflection["answer"], r["self_check"]["prediction"]):
        if answer is not None:
            V[answer] = V.get(answer, 0.0) + TAU
    ranked = sorted(V.values(), reverse=True)
    assert len(ranked) == 1 or ranked[0] - ranked[1] > 1e-6  # no tie to break
    answer = max(V, key=V.get)
    return answer, V[answer] / sum(V.values()), leader, reflection["answer"], v_int, c


def test_a_voter_that_never_parses_contributes_nothing(tiny_backend, shapes_test, easyvqa_test, tmp_path):
    """The tiny base never writes a JSON array: as the generative voter it fails three times per candidate list."""
    cfg = TTSConfig(data=["shapes:test", "easyvqa:test"], degrade=["diffusion:571"], n=2, voter="generative",
                    ablations=False, tokens=RoleTokens(base=48, voter=24, critic=32, reflection=32, planner=24))
    summary = run_tts(tiny_backend, {"expert": tiny_backend}, cfg, tmp_path,
                      [Dataset("shapes:test", [shapes_test[2]]), Dataset("easyvqa:test", [easyvqa_test[1]])])
    records = read(tmp_path)
    assert len(records) == 2
    entries = [g for r in records for g in r["voter"]["generative"]]
    assert entries
    for g in entries:
        assert g["expert"] == "expert" and g["probs"] is None and g["attempts"] == 3 and len(g["replies"]) == 3
        assert all(P.parse_probabilities(text, len(g["candidates"])) is None for text in g["replies"])
    for r in records:
        assert not r["errors"] and r["voter"]["loglik"] == {}  # a failed vote is no error; no likelihood voter
        ca = r["methods"]["ca-tts"]
        assert ca["answer"] is not None and ca["voter_ok"] is False
        answer, confidence, *_ = hand_vote(r, 2, voter="generative")  # the vote without any voter term
        assert (ca["answer"], ca["confidence"]) == (answer, pytest.approx(confidence, abs=1e-6))
        # its cost is counted: 2 samples, 3 voter attempts, critic + reflection, self-check, plan
        assert ca["model_calls"] == 2 + 3 + 2 + 1 + 1
        voter_tokens = sum(g["tokens"] for g in r["voter"]["generative"]
                           if tuple(g["candidates"]) == tuple(sorted({s["prediction"] for s in r["samples"]} - {None})))
        assert voter_tokens > 0
    assert summary["modules"]["experts"]["expert"]["generative_voter_failed"] == 1.0
    assert "generative voter failed 100.0%" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------- 4. the final vote by hand

def test_final_vote_recomputed_by_hand(main_run):
    _, _, records = main_run
    r = record(records, "easyvqa:test", "easyvqa-test-00001", 571)
    answer, confidence, leader, reflected, v_int, c = hand_vote(r, 4)
    # every module contributes here: two candidates for the voter, a reflection that changes the leader's
    # answer, a self-check, and the voter's choice is not the internal vote's leader
    assert len(c) == 2 and reflected not in (None, leader) and r["self_check"]["prediction"] is not None
    assert max(c, key=c.get) != max(v_int, key=v_int.get)
    ca = r["methods"]["ca-tts"]
    assert ca["answer"] == answer and ca["confidence"] == pytest.approx(confidence, abs=1e-6)
    assert ca["leader"] == leader and ca["reflect"] == reflected and ca["check"] == r["self_check"]["prediction"]
    assert 0 < ca["confidence"] < 0.6  # a split vote, not a unanimous one
    # and on every other record of the run, the same arithmetic gives the recorded answer
    for other in records:
        if any(s["prediction"] is not None for s in other["samples"]):
            a, conf, *_ = hand_vote(other, 4)
            assert other["methods"]["ca-tts"]["answer"] == a
            assert other["methods"]["ca-tts"]["confidence"] == pytest.approx(conf, abs=1e-6)


# ---------------------------------------------------------------- 5. resume after a kill

class Counting:
    """The real backend, counting the record key of every prompt it is given (nothing else changes)."""

    def __init__(self, inner):
        self.inner, self.keys = inner, Counter()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, params):
        self.keys.update(p.key for p in prompts)
        return self.inner.generate(prompts, params)

    def contrastive_generate(self, prompts, noised, params):
        self.keys.update(p.key for p in prompts)
        return self.inner.contrastive_generate(prompts, noised, params)

    def score_candidates(self, prompts, candidates):
        self.keys.update(p.key for p in prompts)
        return self.inner.score_candidates(prompts, candidates)


def test_resume_after_a_kill_redoes_only_the_lost_items(main_run, tiny_backend, expert_backend, shapes_test,
                                                        easyvqa_test, tmp_path):
    out, summary, clean = main_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    lines = (copy / "results.jsonl").read_text().splitlines(keepends=True)
    lost = [json.loads(line)["key"] for line in lines[-2:]]
    # killed while writing: the last record is gone, the one before it half written
    (copy / "results.jsonl").write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    base, expert = Counting(tiny_backend), Counting(expert_backend)
    again = run_tts(base, {"expert": expert, "base": base}, TTSConfig(**CFG), copy,
                    datasets(shapes_test, easyvqa_test), chunk=1)
    assert set(base.keys) == set(lost) and set(expert.keys) == set(lost)  # nothing finished was asked again
    resumed = without_seconds(read(copy))
    assert list(resumed) == [r["key"] for r in clean]  # one record per item, in the clean run's order
    assert_same(resumed, without_seconds(clean))  # the redone items ran in batches of 1: floats up to rounding
    for part in ("methods", "ablations", "weights", "gate_curve", "scaling", "modules"):
        assert_same(again[part], summary[part], part)
    # a finished run asks nothing
    base2, expert2 = Counting(tiny_backend), Counting(expert_backend)
    run_tts(base2, {"expert": expert2, "base": base2}, TTSConfig(**CFG), copy, datasets(shapes_test, easyvqa_test))
    assert not base2.keys and not expert2.keys


# ---------------------------------------------------------------- 6. the command line

def test_cli_runs_and_writes_the_report(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["tts", "--limit", "2", "--n", "2", "--degrade", "diffusion:0", "--max-new-tokens", "48",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    records = read(out)
    assert len(records) == 4 and {x["data"] for x in records} == {"easyvqa:test", "shapes:test"}
    assert all(len(x["samples"]) == 2 and x["level"] == 0 for x in records)
    summary = json.loads((out / "summary.json").read_text())
    methods = {m["name"]: m for m in summary["methods"]}
    assert {"pass@1", "majority", "deepconf", "best-of-n", "ca-tts", "ca-tts-gated"} <= set(methods)
    for m in methods.values():
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["ece"] <= 1 and m["n"] == 4
        assert m["generated_tokens_per_question"] > 0 and m["model_calls_per_question"] >= 1
    assert methods["pass@1"]["model_calls_per_question"] == 1
    assert methods["majority"]["model_calls_per_question"] == 2
    assert methods["ca-tts"]["model_calls_per_question"] > methods["majority"]["model_calls_per_question"]
    acc = sum(x["methods"]["ca-tts"]["correct"] for x in records) / 4
    assert methods["ca-tts"]["accuracy"] == pytest.approx(acc)
    d = summary["ca_tts_vs_majority"]
    assert set(d) == {"diff", "ci_low", "ci_high"} and d["ci_low"] <= d["diff"] <= d["ci_high"]
    assert summary["config"]["n"] == 2 and summary["config"]["expert"] == "tiny-expert"
    md = (out / "summary.md").read_text()
    assert md.startswith("# CA-TTS: tiny with expert tiny-expert, N = 2") and "| ca-tts |" in md
    assert md in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--modules", "foo"], "--modules"),
    (["--voter", "x"], "--voter"),
    (["--scaling", "a"], "--scaling"),
    (["--weight", "x"], "--weight"),
], ids=["modules", "voter", "scaling", "weight"])
def test_cli_bad_arguments(args, message, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["tts", *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:")
    assert not out.exists()


# ---------------------------------------------------------------- 7. the gate's bookkeeping

def test_gate_tokens_grow_with_the_threshold(main_run):
    _, summary, records = main_run
    thresholds = sorted(GATE_THRESHOLDS, key=float)
    for r in records:
        gated = r["gated"]
        assert sorted(gated, key=float) == [str(t) for t in thresholds]
        rows = [gated[str(t)] for t in thresholds]
        assert [g["generated_tokens"] for g in rows] == sorted(g["generated_tokens"] for g in rows), r["key"]
        assert [g["samples"] for g in rows] == sorted(g["samples"] for g in rows), r["key"]
        assert r["methods"]["ca-tts-gated"] == gated["0.9"]
        for t, g in zip(thresholds, rows):
            # its cost by hand: the samples drawn and one expert vote per wave of 2 (when a wave has an answer),
            # plus critic, reflection and self-check when the gate stayed open
            k = g["samples"]
            tokens = sum(s["num_tokens"] for s in r["samples"][:k])
            calls = k + sum(any(s["prediction"] is not None for s in r["samples"][:w]) for w in range(2, k + 1, 2))
            if g["modules_ran"]:
                assert g["gate_confidence"] < t and k == 4
                leader = sc_leader(r, 4) or r["greedy"]["prediction"]
                if leader is not None:
                    x = next(x for x in r["reflections"] if x["expert"] == "expert" and x["leader"] == leader)
                    tokens, calls = tokens + x["critic_tokens"] + x["reflection_tokens"], calls + 2
                if r["self_check"] is not None:
                    tokens, calls = tokens + r["self_check"]["num_tokens"], calls + 1
                # the gate stayed open: the same vote as the full CA-TTS, without the planner's tokens
                ca = r["methods"]["ca-tts"]
                assert (g["answer"], g["confidence"]) == (ca["answer"], ca["confidence"])
                assert g["generated_tokens"] == ca["generated_tokens"] - r["plan"]["expert"]["tokens"]
            else:
                assert g["gate_confidence"] >= t
            assert (g["generated_tokens"], g["model_calls"]) == (tokens, calls), (r["key"], t)
            assert g["generated_tokens"] <= r["methods"]["ca-tts"]["generated_tokens"]
    assert any(g["modules_ran"] for r in records for g in r["gated"].values())
    assert any(not g["modules_ran"] for r in records for g in r["gated"].values())
    samples = {t: sum(r["gated"][str(t)]["samples"] for r in records) / len(records) for t in (0.5, 0.99)}
    assert samples[0.99] > samples[0.5]
    curve = summary["gate_curve"]
    assert curve["0.99"]["generated_tokens_per_question"] > curve["0.5"]["generated_tokens_per_question"]
    r = record(records, "shapes:test", "shapes-test-00000-2", 571)
    assert r["gated"]["0.5"]["samples"] == 2 and r["gated"]["0.99"]["samples"] == 4
