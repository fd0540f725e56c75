"""``catts probe``: accuracy and confidence of one model under image degradations (spec sections 1-4).

For every dataset x degradation kind x level, each question is asked greedily about the degraded
image; every record keeps the answer, how it was extracted, and every confidence: the trace
confidences (mean C, tail, bottom-10%, lowest window), ``answer_prob`` (the extracted answer's
probability), ``nmlp`` (length-normalised trace probability) and ``c_mapped`` (C through a monotone
map fitted on the clean ``val`` split of each embedded dataset, or on the clean level itself for
files). Per level: accuracy, mean confidences, ECE / Brier / AUROC, unparsed rate and n. The run
folder resumes after a kill; ``catts.report.probe`` writes the CSV, figures and markdown.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from catts.calibration.metrics import auroc, brier, ece
from catts.confidence.answer import answer_probability, nmlp
from catts.confidence.mapping import ConfidenceMap
from catts.data import DataError, Sample, load_data
from catts.eval import grade, to_prompt
from catts.models.backend import Backend, SamplingParams
from catts.perception.degrade import degrade, key_region_noise, parse_degrade_spec
from catts.runs import RunDir

DEFAULT_DATA = ("easyvqa:test", "shapes:test")
DEFAULT_DEGRADE = ("none:0", "diffusion:L8", "gaussian_noise:1,2,3,4,5", "blur:1,2,3,4,5", "jpeg:1,2,3,4,5",
                   "lowres:1,2,3,4,5")
CONFIDENCES = ("answer_prob", "nmlp", "c_mapped", "mean", "tail", "bottom10", "lowest_window")


@dataclass
class ProbeConfig:
    model: str = "tiny"
    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    degrade: list[str] = field(default_factory=lambda: list(DEFAULT_DEGRADE))
    limit: int | None = 150          # questions per dataset
    map_limit: int = 150             # held-out questions per dataset for the confidence map
    seed: int = 0                    # degradation noise seed
    max_new_tokens: int = 64
    saliency: str = "spectral"       # key-region noise: spectral, model (the probed model's tower) or a CLIP folder


@dataclass
class Timer:
    """Seconds inside model calls vs everything else (degrading, extracting, scoring, metrics)."""

    model: float = 0.0
    total: float = 0.0

    @property
    def overhead_share(self) -> float:
        return (self.total - self.model) / self.total if self.total else 0.0


def _held_out_split(spec: str) -> str | None:
    name, _, split = spec.partition(":")
    return f"{name}:val" if split in ("test", "train") and name in ("easyvqa", "shapes") else None


def _answer_record(sample: Sample, trace, cmap: ConfidenceMap | None) -> dict:
    rec = grade(sample, trace)
    conf = rec["confidence"]
    prob = answer_probability(trace, sample.answer_type, sample.options, rec["prediction"])
    # an unparsed answer has no answer to be confident in: None here, 0 in ECE / Brier / AUROC
    conf["answer_prob"] = prob if rec["prediction"] is not None else None
    conf["nmlp"] = nmlp(trace)
    if cmap is not None:
        conf["c_mapped"] = float(cmap(conf["mean"])) if np.isfinite(conf["mean"]) else 0.0
    return rec


def record_key(data: str, sample_id: str, kind: str, level: int) -> str:
    return f"{data}|{sample_id}|{kind}|{level}"


def _degrade(image, kind: str, level: int, cfg: ProbeConfig, key: str, saliency=None):
    if kind == "key_region" and saliency is not None:
        return key_region_noise(image, level, saliency=saliency(image), seed=cfg.seed, key=key)
    return degrade(image, kind, level, seed=cfg.seed, key=key)


def _prepare(samples: Sequence[Sample], kind: str, level: int, cfg: ProbeConfig, data: str = "",
             saliency=None) -> tuple[list[dict], list[tuple]]:
    """Degrade each sample's images: error records for unreadable samples, and (sample, record, prompt)."""
    errors, ready = [], []
    for s in samples:
        base = {"key": record_key(data, s.id, kind, level), "data": data, "id": s.id, "kind": kind, "level": level,
                "question_type": s.question_type, "gold": s.answer}
        try:
            images = [_degrade(im, kind, level, cfg, s.id, saliency) for im in s.load_images()]
            ready.append((s, base, to_prompt(s, images)))
        except (DataError, OSError, ValueError) as e:
            errors.append(base | {"error": f"sample {s.id!r}: {e}", "correct": False})
    return errors, ready


def _answer(backend: Backend, prepared: tuple[list[dict], list[tuple]], cfg: ProbeConfig,
            cmap: ConfidenceMap | None, timer: Timer) -> list[dict]:
    """Ask the prepared prompts greedily and grade: one record per sample."""
    records, ready = list(prepared[0]), prepared[1]
    if ready:
        t0 = time.perf_counter()
        traces = backend.generate([p for _, _, p in ready], SamplingParams(max_new_tokens=cfg.max_new_tokens))
        timer.model += time.perf_counter() - t0
        for (s, base, _), (trace,) in zip(ready, traces):
            records.append(base | _answer_record(s, trace, cmap))
    return records


def fit_confidence_map(backend: Backend, samples: Sequence[Sample], cfg: ProbeConfig, timer: Timer) -> ConfidenceMap:
    recs = _answer(backend, _prepare(samples, "none", 0, cfg), cfg, None, timer)
    ok = [r for r in recs if "error" not in r]
    return ConfidenceMap("platt").fit([r["confidence"]["mean"] for r in ok], [r["correct"] for r in ok])


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def level_metrics(records: list[dict]) -> dict:
    """Accuracy, mean confidences, ECE/Brier/AUROC (on answer_prob; AUROC of C too), unparsed rate, n.

    Mean confidences are over the answers that have one (``answer_prob`` over parsed answers);
    ECE, Brier and AUROC count an unparsed answer as wrong with confidence 0.
    """
    ok = [r for r in records if "error" not in r]
    if not ok:
        return {"n": 0, "n_errors": len(records)}
    z = np.array([r["correct"] for r in ok], dtype=float)
    conf = {name: np.array([_num(r["confidence"].get(name)) for r in ok]) for name in CONFIDENCES}
    p = np.clip(np.nan_to_num(conf["answer_prob"], nan=0.0), 0.0, 1.0)
    parsed = np.array([r["prediction"] is not None for r in ok])
    return {
        "n": len(ok), "n_errors": len(records) - len(ok), "accuracy": float(z.mean()),
        "unparsed_rate": float(np.mean([r["prediction"] is None for r in ok])),
        "confidence": {k: float(np.nanmean(v)) for k, v in conf.items() if np.isfinite(v).any()},
        "accuracy_parsed": float(z[parsed].mean()) if parsed.any() else float("nan"),
        "ece": ece(p, z, n_bins=15), "brier": brier(p, z), "auroc": auroc(p, z),
        "auroc_c": auroc(conf["mean"], z) if np.isfinite(conf["mean"]).all() else float("nan"),
        "ece_c_mapped": ece(np.clip(conf["c_mapped"], 0, 1), z) if np.isfinite(conf["c_mapped"]).all() else None,
        "mean_tokens": float(np.mean([r["num_tokens"] for r in ok])),
    }


def run_probe(backend: Backend, cfg: ProbeConfig, out: str | Path,
              progress: Callable[[int, int], None] | None = None, batch: int = 64) -> dict:
    """The whole sweep; returns the summary (also written to ``out/summary.json``)."""
    t_start = time.perf_counter()
    timer = Timer()
    run = RunDir(out, {"task": "probe", **asdict(cfg)})  # a larger --limit resumes and adds questions
    sweeps = [parse_degrade_spec(d) for d in cfg.degrade]
    datasets = {}
    for spec in cfg.data:
        samples = load_data(spec)
        datasets[spec] = samples[: cfg.limit] if cfg.limit else samples
    total = sum(len(s) for s in datasets.values()) * sum(len(levels) for _, levels in sweeps)
    done = run.done_keys("key")
    if progress:
        progress(len(done), total)
    saliency = None
    if cfg.saliency != "spectral" and any(kind == "key_region" for kind, _ in sweeps):
        from catts.perception.saliency import load_saliency

        saliency = load_saliency(cfg.model if cfg.saliency == "model" else cfg.saliency)
    maps_file = run.path / "confidence_maps.json"
    maps = {k: ConfidenceMap.from_dict(v) for k, v in json.loads(maps_file.read_text()).items()} \
        if maps_file.exists() else {}
    for spec, samples in datasets.items():
        if spec not in maps:
            held = _held_out_split(spec)
            map_samples = load_data(held)[: cfg.map_limit] if held else samples
            maps[spec] = fit_confidence_map(backend, map_samples, cfg, timer)
            maps_file.write_text(json.dumps({k: m.to_dict() for k, m in maps.items()}))
        jobs = [(kind, level, todo[k:k + batch]) for kind, levels in sweeps for level in levels
                for todo in [[s for s in samples if record_key(spec, s.id, kind, level) not in done]]
                for k in range(0, len(todo), batch)]
        # degrade the next batch on a worker thread while the model answers this one
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(_prepare, jobs[0][2], jobs[0][0], jobs[0][1], cfg, spec, saliency) if jobs else None
            for k, (kind, level, _) in enumerate(jobs):
                prepared = nxt.result()
                if k + 1 < len(jobs):
                    nk, nl, ns = jobs[k + 1]
                    nxt = pool.submit(_prepare, ns, nk, nl, cfg, spec, saliency)
                recs = _answer(backend, prepared, cfg, maps[spec], timer)
                run.append(recs)
                if progress:
                    progress(len(recs), total)
    records = run.records()
    grouped: dict[tuple, list[dict]] = {}
    for r in records:
        grouped.setdefault((r["data"], r["kind"], r["level"]), []).append(r)
    levels = [{"data": spec, "kind": kind, "level": level, **level_metrics(grouped.get((spec, kind, level), []))}
              for spec in datasets for kind, lvls in sweeps for level in lvls]
    from catts.report.probe import bluntness, write_markdown, write_probe_figures

    summary = {"levels": levels, "bluntness": {d: bluntness([lv for lv in levels if lv["data"] == d]) for d in datasets},
               "confidence_maps": {k: m.to_dict() for k, m in maps.items()}, "n_records": len(records)}
    write_probe_figures(run.path, summary, records, datasets, cfg.seed)
    timer.total = time.perf_counter() - t_start
    summary["timing"] = {"total_seconds": round(timer.total, 2), "model_seconds": round(timer.model, 2),
                         "overhead_share": round(timer.overhead_share, 4)}
    write_markdown(run.path / "summary.md", summary)
    run.write_summary(summary)
    return summary
