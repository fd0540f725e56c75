"""The summary of a CA-TTS run: methods, ablations, weights, scaling, the gate's curve, module statistics.

Every accuracy is over all items of the run that got an answer record (an unparsed or missing final
answer counts as wrong); ECE is over the same items with each method's own confidence (the winner's
share of its vote; for pass@1 and best-of-N the answer probability of the chosen trace; 0 when no
answer), 15 equal-width bins. Differences come with a paired bootstrap 95% interval over questions.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from catts.calibration.metrics import ece
from catts.jobs.rundir import RunDir
from catts.tts.vote import paired_bootstrap, scaling_slope

MAIN_METHODS = ("pass@1", "majority", "deepconf", "best-of-n", "ca-tts", "ca-tts-gated")


def _stats(outcomes: list[dict]) -> dict:
    correct = np.array([o["correct"] for o in outcomes], dtype=float)
    conf = np.array([o["confidence"] for o in outcomes], dtype=float)
    return {"accuracy": float(correct.mean()), "ece": float(ece(conf, correct)) if len(correct) else None,
            "generated_tokens_per_question": float(np.mean([o["generated_tokens"] for o in outcomes])),
            "model_calls_per_question": float(np.mean([o["model_calls"] for o in outcomes])), "n": len(outcomes)}


def _table(records: list[dict], field: str) -> dict[str, dict]:
    names = list(dict.fromkeys(k for r in records for k in r.get(field, {})))
    return {k: _stats([r[field][k] for r in records]) for k in names if all(k in r[field] for r in records)}


def _diff(records: list[dict], a: tuple, b: tuple) -> dict | None:
    def pick(r, path):
        for p in path:
            r = r.get(p, {})
        return r.get("correct")
    xa, xb = [pick(r, a) for r in records], [pick(r, b) for r in records]
    if not records or None in xa or None in xb:
        return None
    return {k: round(v, 5) for k, v in paired_bootstrap(xa, xb, n_boot=2000, seed=0).items()}


def module_stats(records: list[dict], n: int) -> dict:
    """What each module did, per expert where an expert plays it (base-as-expert ablations apart)."""
    experts = sorted({e for r in records for e in r.get("plan", {})} | {x["expert"] for r in records
                                                                        for x in r.get("reflections", [])})
    per_expert = {}
    for e in experts:
        plans = [r["plan"][e] for r in records if e in r.get("plan", {})]
        refl = [x for r in records for x in r.get("reflections", []) if x["expert"] == e]
        gen = [g for r in records for g in r.get("voter", {}).get("generative", []) if g["expert"] == e]
        per_expert[e] = {
            "planner_parsed": float(np.mean([p["parsed"] for p in plans])) if plans else None,
            "planner_orders": dict(Counter(" > ".join(p["order"]) for p in plans)),
            "critique_verdicts": dict(Counter(str(x.get("verdict")) for x in refl)),
            "reflection_changed_answer": float(np.mean([x["answer"] != x["leader"] for x in refl])) if refl else None,
            "reflection_accuracy": float(np.mean([x["correct"] for x in refl])) if refl else None,
            "generative_voter_failed": float(np.mean([g["probs"] is None for g in gen])) if gen else None}
    checks = [r["self_check"] for r in records if r.get("self_check")]
    return {"experts": per_expert,
            "self_check_accuracy": float(np.mean([c["correct"] for c in checks])) if checks else None,
            "self_check_modes": dict(Counter(c.get("contrastive") for c in checks)),
            "distinct_answers_per_question": float(np.mean([len({s["prediction"] for s in r["samples"][:n]
                                                                  if s["prediction"] is not None}) for r in records]))
            if records else None,
            "oracle_at_n": float(np.mean([any(s["correct"] for s in r["samples"][:n]) for r in records]))
            if records else None,
            "module_errors": dict(Counter(e["stage"] for r in records for e in r.get("errors", [])))}


def summarize_tts(records: list[dict], cfg) -> dict:
    ok = [r for r in records if "error" not in r]
    methods = _table(ok, "methods")
    summary = {
        "n_items": len(ok), "n_errors": len(records) - len(ok),
        "methods": [{"name": k, **v} for k, v in methods.items()],
        "ca_tts_vs_majority": _diff(ok, ("methods", "ca-tts"), ("methods", "majority")),
        "majority_vs_pass1": _diff(ok, ("methods", "majority"), ("methods", "pass@1")),
        "gated_vs_ca_tts": _diff(ok, ("methods", "ca-tts-gated"), ("methods", "ca-tts")),
        "ablations": _table(ok, "ablations"), "weights": _table(ok, "weights"),
        "gate_curve": _table(ok, "gated"), "modules": module_stats(ok, cfg.n),
        "by_level": {}, "scaling": {}}
    if methods.get("ca-tts") and methods.get("ca-tts-gated"):
        full, gated = methods["ca-tts"], methods["ca-tts-gated"]
        summary["gated_token_ratio"] = gated["generated_tokens_per_question"] / max(
            1e-9, full["generated_tokens_per_question"])
    groups = defaultdict(list)
    for r in ok:
        groups[f"{r['data']}|{r['kind']}:{r['level']}"].append(r)
    summary["by_level"] = {g: {k: v["accuracy"] for k, v in _table(rs, "methods").items()} for g, rs in groups.items()}
    ns = sorted({int(n) for r in ok for n in r.get("scaling", {})})
    if ns:
        per = {n: {m: _stats([r["scaling"][str(n)][m] for r in ok]) for m in ok[0]["scaling"][str(n)]} for n in ns}
        summary["scaling"] = {"n": ns, "methods": {m: {"accuracy": [per[n][m]["accuracy"] for n in ns],
                                                       "generated_tokens_per_question":
                                                           [per[n][m]["generated_tokens_per_question"] for n in ns],
                                                       "model_calls_per_question":
                                                           [per[n][m]["model_calls_per_question"] for n in ns]}
                                                   for m in per[ns[0]]}}
        if len(ns) > 1:
            for m, row in summary["scaling"]["methods"].items():
                row["slope_per_doubling"] = scaling_slope(ns, row["accuracy"])
    return summary


def write_report(run: RunDir, records: list[dict], cfg, timing: dict, n_input_rows: int) -> dict:
    summary = summarize_tts(records, cfg) | {"n_input_rows": n_input_rows, "timing": timing,
                                             "errors": [{k: r.get(k) for k in ("key", "stage", "error")}
                                                        for r in records if "error" in r]
                                             + [e for r in records for e in r.get("errors", [])]}
    run.write_summary(summary)
    (run.path / "summary.md").write_text(markdown(summary, cfg))
    if summary["scaling"] or summary["gate_curve"]:
        plot(summary, run.path / "tts_scaling.png")
    return summary


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown(summary: dict, cfg) -> str:
    lines = [f"# CA-TTS: {cfg.model} with expert {cfg.expert}, N = {cfg.n}", "",
             f"{summary['n_items']} items ({', '.join(cfg.data)} x {', '.join(cfg.degrade)}), "
             f"{summary['n_errors']} errors. Accuracy over all items (unparsed = wrong), ECE of each method's own "
             "confidence.", "", "| method | accuracy | ECE | generated tokens / q | model calls / q |",
             "|---|---|---|---|---|"]
    for m in summary["methods"]:
        lines.append(f"| {m['name']} | {_pct(m['accuracy'])} | {m['ece']:.3f} | "
                     f"{m['generated_tokens_per_question']:.1f} | {m['model_calls_per_question']:.1f} |")
    d = summary.get("ca_tts_vs_majority")
    if d:
        lines += ["", f"CA-TTS - majority: {100 * d['diff']:+.1f} points (95% CI {100 * d['ci_low']:+.1f} to "
                      f"{100 * d['ci_high']:+.1f})."]
    if summary.get("gated_token_ratio") is not None and summary.get("gated_vs_ca_tts"):
        g = summary["gated_vs_ca_tts"]
        lines.append(f"Gated - full CA-TTS: {100 * g['diff']:+.1f} points with "
                     f"{100 * summary['gated_token_ratio']:.0f}% of its generated tokens.")
    for title, key in (("Ablations (every module subset, measured)", "ablations"),
                       ("Internal-vote weight", "weights"), ("Gate threshold", "gate_curve")):
        if summary[key]:
            lines += ["", f"## {title}", "", "| variant | accuracy | tokens / q |", "|---|---|---|"]
            lines += [f"| {k} | {_pct(v['accuracy'])} | {v['generated_tokens_per_question']:.1f} |"
                      for k, v in summary[key].items()]
    if summary["scaling"]:
        ns = summary["scaling"]["n"]
        lines += ["", "## Scaling", "", "| method | " + " | ".join(f"N={n}" for n in ns) + " | slope / doubling |",
                  "|---|" + "---|" * (len(ns) + 1)]
        for m, row in summary["scaling"]["methods"].items():
            slope = row.get("slope_per_doubling")
            lines.append(f"| {m} | " + " | ".join(_pct(a) for a in row["accuracy"])
                         + f" | {'n/a' if slope is None else f'{100 * slope:.2f}'} |")
    mods = summary["modules"]
    lines += ["", "## Modules", ""]
    for e, m in mods["experts"].items():
        lines.append(f"- {e}: planner replies parsed {_pct(m['planner_parsed'])}%; critique verdicts "
                     f"{m['critique_verdicts']}; reflection changed the leader's answer in "
                     f"{_pct(m['reflection_changed_answer'])}%, its accuracy {_pct(m['reflection_accuracy'])}%"
                     + (f"; generative voter failed {_pct(m['generative_voter_failed'])}%"
                        if m["generative_voter_failed"] is not None else ""))
    lines += [f"- self-check accuracy {_pct(mods['self_check_accuracy'])}% ({mods['self_check_modes']})",
              f"- distinct answers per question {mods['distinct_answers_per_question']:.2f}; oracle@N "
              f"{_pct(mods['oracle_at_n'])}", ""]
    return "\n".join(lines)


def plot(summary: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    if summary["scaling"]:
        ns = summary["scaling"]["n"]
        for m, row in summary["scaling"]["methods"].items():
            axes[0].plot(ns, [100 * a for a in row["accuracy"]], marker="o", label=m)
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("N samples")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(fontsize=7)
    curve = summary["gate_curve"]
    if curve:
        axes[1].plot([v["generated_tokens_per_question"] for v in curve.values()],
                     [100 * v["accuracy"] for v in curve.values()], marker="o", label="ca-tts-gated (thresholds)")
        for m in summary["methods"]:
            if m["name"] in ("ca-tts", "majority", "pass@1"):
                axes[1].scatter([m["generated_tokens_per_question"]], [100 * m["accuracy"]], label=m["name"])
        axes[1].set_xlabel("generated tokens per question")
        axes[1].set_ylabel("accuracy (%)")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["MAIN_METHODS", "summarize_tts", "write_report"]
