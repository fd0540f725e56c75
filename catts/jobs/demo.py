"""``catts demo``: the whole story on the embedded default, in one run folder and one HTML page.

1. the probe (``catts.jobs.probe``) of the base model and of its CDRL-tuned copy, clean to diffusion t = 999:
   perceptual bluntness, and what CDRL changes;
2. CA-TTS (``catts.jobs.tts``) against pass@1, majority, DeepConf and best-of-N on the same samples, once with the
   base model and once with the CDRL model as the sampler: the paper's ablation (base, CDRL only, CA-TTS only,
   CDRL + CA-TTS), produced by catts itself;
3. ``report.html``: the headline tables, then each run's own report body (figures inline), and ``summary.json`` /
   ``summary.md`` with the headline numbers.

Each step is an ordinary run folder under ``out`` (``probe-base``, ``probe-cdrl``, ``tts-base``, ``tts-cdrl``),
so a killed demo resumes where it stopped and ``catts report`` works on every step alone. The demo's sizes are
smaller than each command's defaults so that it fits in a few minutes on two CPU cores; the numbers in docs/ come
from the full-size runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from catts.jobs.progress import Progress
from catts.jobs.rundir import dumps, versions

STEPS = ("probe-base", "probe-cdrl", "tts-base", "tts-cdrl")
HEADLINE_LEVELS = (856, 999)


@dataclass
class DemoConfig:
    base: str = "tiny"
    cdrl: str = "tiny-cdrl"
    expert: str = "tiny-expert"
    data: list[str] = field(default_factory=lambda: ["easyvqa:test", "shapes:test"])
    probe_limit: int = 150                # questions per dataset in the probe
    probe_degrade: list[str] = field(default_factory=lambda: ["none:0", "diffusion:L8"])
    tts_limit: int = 50                   # questions per dataset in CA-TTS
    tts_degrade: list[str] = field(default_factory=lambda: ["diffusion:0,285,571,856"])
    n: int = 8
    seed: int = 0
    batch_size: int = 64
    confidence: str = ""                  # the confidence CDRL trained; "": read from the model's cdrl_config.json


def _probe(backend, cfg: DemoConfig, out: Path, progress: Progress, overwrite: bool) -> dict:
    from catts.jobs.probe import ProbeConfig, load_datasets, run_probe

    pcfg = ProbeConfig(model=str(backend.name), data=list(cfg.data), degrade=list(cfg.probe_degrade),
                       limit=cfg.probe_limit, seed=cfg.seed)
    return run_probe(backend, pcfg, out, datasets=load_datasets(pcfg), progress=progress, batch=cfg.batch_size,
                     overwrite=overwrite)


def _tts(model: str, backend, expert, cfg: DemoConfig, out: Path, progress: Progress, overwrite: bool) -> dict:
    from catts.data import load_data
    from catts.jobs.eval import backend_identity
    from catts.jobs.probe import Dataset
    from catts.jobs.tts import TTSConfig, run_tts, tts_identity

    tcfg = TTSConfig(model=model, expert=cfg.expert, data=list(cfg.data), degrade=list(cfg.tts_degrade),
                     limit=cfg.tts_limit, n=cfg.n, ablations=False, seed=cfg.seed)
    datasets = []
    for spec in tcfg.data:
        errors: list[dict] = []
        datasets.append(Dataset(spec, load_data(spec, errors)[: cfg.tts_limit], errors))
    identity = tts_identity(tcfg, backend_identity(backend), backend_identity(expert))
    return run_tts(backend, {"expert": expert}, tcfg, out, datasets, progress=progress, overwrite=overwrite,
                   identity=identity)


def probe_headline(summary: dict) -> dict[str, dict]:
    """Per dataset: accuracy (all answers) clean and at the strongest level, the unparsed rate there, and for each
    probability-valued confidence (``catts.report.finding.FINDING_CONFIDENCES``) over parsed answers: the bluntness
    ratio, its mean clean and noisy, and its AUROC and ECE at the headline diffusion levels."""
    from catts.report.finding import FINDING_CONFIDENCES

    out = {}
    for data, f in (summary.get("finding") or {}).items():
        row = {"accuracy_clean": f["all"]["accuracy"][0], "accuracy_noisy": f["all"]["accuracy"][1],
               "unparsed_noisy": f["unparsed_rate"][1]}
        for name in FINDING_CONFIDENCES:
            c = f["confidences"][name]["parsed"]
            row[name] = {"drop_ratio": c["drop_ratio"], "clean": c["confidence"][0], "noisy": c["confidence"][1]}
            for lv in summary["levels"]:
                if lv["data"] == data and lv["kind"] == "diffusion" and lv["level"] in HEADLINE_LEVELS:
                    cal = lv["calibration"][name]["parsed"]
                    row[name][f"auroc_t{lv['level']}"] = cal["auroc"]
                    row[name][f"ece_t{lv['level']}"] = cal["ece"]
        out[data] = row
    return out


def tts_headline(summary: dict) -> dict[str, float]:
    """Accuracy of every method of a tts run (all its questions)."""
    return {m["name"]: m["accuracy"] for m in summary["methods"]}


def ablation_rows(tts_base: dict, tts_cdrl: dict) -> list[tuple[str, float, float]]:
    """The paper's ablation: (setting, accuracy, points over the base's pass@1), same questions and levels."""
    ref = tts_base["pass@1"]
    rows = [("base (pass@1)", ref), ("CDRL only (pass@1)", tts_cdrl["pass@1"]),
            ("CA-TTS only", tts_base["ca-tts"]), ("CDRL + CA-TTS", tts_cdrl["ca-tts"])]
    return [(name, acc, 100 * (acc - ref)) for name, acc in rows]


PROBE_COLUMNS = ("bluntness ratio", "acc clean", "acc t=999", "unparsed t=999", "AUROC t=856", "AUROC t=999",
                 "ECE t=856", "ECE t=999")


def probe_rows(head: dict, confidence: str) -> list[list]:
    """[data, model, *PROBE_COLUMNS] rows of the probe headline for one confidence (None where undefined)."""
    rows = []
    for data in head["probe"]["base"]:
        for model in ("base", "cdrl"):
            r = head["probe"][model].get(data, {})
            c = r.get(confidence, {})
            rows.append([data, model, c.get("drop_ratio"), r.get("accuracy_clean"), r.get("accuracy_noisy"),
                         r.get("unparsed_noisy"), c.get("auroc_t856"), c.get("auroc_t999"), c.get("ece_t856"),
                         c.get("ece_t999")])
    return rows


def summary_markdown(head: dict, trained: str) -> str:
    from catts.report.finding import CONFIDENCE_WORDS, FINDING_CONFIDENCES
    from catts.report.html import num as f

    lines = ["# catts demo", ""]
    for name in sorted(FINDING_CONFIDENCES, key=lambda n: n != trained):
        what = "the confidence CDRL trains" if name == trained else "beside it"
        lines += [f"## Probe, base against CDRL: {CONFIDENCE_WORDS[name]} ({what}), parsed answers", "",
                  "| data | model | " + " | ".join(PROBE_COLUMNS) + " |", "|---" * (len(PROBE_COLUMNS) + 2) + "|"]
        lines += ["| " + " | ".join(f(x) for x in row) + " |" for row in probe_rows(head, name)]
        lines.append("")
    lines += ["## Test-time scaling (accuracy over all questions and levels)", "",
              "| setting | accuracy | points over base pass@1 |", "|---|---|---|"]
    lines += [f"| {name} | {acc:.3f} | {gain:+.1f} |" for name, acc, gain in head["ablation"]]
    lines += ["", "| method | sampler: base | sampler: CDRL |", "|---|---|---|"]
    for name, acc in head["tts"]["base"].items():
        lines.append(f"| {name} | {acc:.3f} | {f(head['tts']['cdrl'].get(name))} |")
    return "\n".join(lines) + "\n"


def trained_confidence(model: str) -> str:
    """The probability-valued confidence a CDRL model was trained on (its ``cdrl_config.json``); the answer
    probability when it was trained on another (C is no probability) or the file is missing."""
    import json

    from catts.models import resolve_model_path
    from catts.report.finding import FINDING_CONFIDENCES

    path = resolve_model_path(model) / "cdrl_config.json"
    kind = json.loads(path.read_text()).get("confidence_kind") if path.is_file() else None
    return kind if kind in FINDING_CONFIDENCES else "answer_prob"


def run_demo(out: str | Path, cfg: DemoConfig | None = None, *, progress: Progress | None = None,
             overwrite: bool = False, device: str = "auto") -> dict:
    """Run the four steps (each resumes), write ``summary.json``, ``summary.md`` and ``report.html`` in ``out``;
    returns the headline numbers."""
    from catts.models import load_backend
    from catts.report.demo import build_demo_report

    cfg = cfg or DemoConfig()
    cfg.confidence = cfg.confidence or trained_confidence(cfg.cdrl)
    progress = progress or Progress()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load = dict(device=device, batch_size=cfg.batch_size)
    base = load_backend(cfg.base, **load)
    cdrl = load_backend(cfg.cdrl, **load)
    expert = load_backend(cfg.expert, **load)
    probes = {"base": _probe(base, cfg, out / "probe-base", progress, overwrite),
              "cdrl": _probe(cdrl, cfg, out / "probe-cdrl", progress, overwrite)}
    tts = {"base": _tts(cfg.base, base, expert, cfg, out / "tts-base", progress, overwrite),
           "cdrl": _tts(cfg.cdrl, cdrl, expert, cfg, out / "tts-cdrl", progress, overwrite)}
    head = {"probe": {k: probe_headline(s) for k, s in probes.items()},
            "tts": {k: tts_headline(s) for k, s in tts.items()}}
    head["ablation"] = ablation_rows(head["tts"]["base"], head["tts"]["cdrl"])
    summary = {"task": "demo", "headline": head, "steps": list(STEPS), "config": asdict(cfg),
               "versions": versions(), "seconds": time.perf_counter() - t0,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / "summary.json").write_text(dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(head, cfg.confidence))
    build_demo_report(out)
    return summary


__all__ = ["DemoConfig", "STEPS", "ablation_rows", "probe_headline", "probe_rows", "run_demo", "summary_markdown",
           "trained_confidence", "tts_headline"]
