"""``catts probe``: accuracy and confidence of one model under image degradations (spec sections 1-4).

For every dataset x degradation kind x level, each question is asked greedily about the degraded
image, through the shared ask -> grade -> record path (``catts.jobs.ask``), so every record keeps
the answer, how it was read, every confidence and its per-token trace. Images are shrunk to the
model's pixel guard *before* they are degraded: the noise lands at the resolution the model sees,
and a huge image never reaches the float64 degradation code at full size.

``c_mapped`` is C through a monotone map fitted on clean images of a held-out split (the ``val``
split of an embedded dataset; for a file, the probed questions' own clean images). Those answers
are records too (``split: "map"``), so the map is refitted from them after a regrade.

Per level the summary is :func:`catts.jobs.summary.summarize`; the finding (``catts.report.finding``)
compares clean with the strongest diffusion level like for like. Per-kind summaries and figures are
computed in a worker process while the model answers the next kind, so the report is off the
critical path. A killed run resumes; a run with another config is refused.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from catts.confidence.mapping import ConfidenceMap
from catts.data import Sample, load_data
from catts.data.image import fit_image
from catts.jobs import shard
from catts.jobs.ask import Item, Timer, ask
from catts.jobs.eval import backend_identity, load_error_records
from catts.jobs.progress import Progress
from catts.jobs.rundir import RunDir
from catts.jobs.summary import N_BINS, errors_of
from catts.models.backend import Backend, SamplingParams
from catts.perception.degrade import degrade, key_region_noise, parse_degrade_spec

DEFAULT_DATA = ("easyvqa:test", "shapes:test")
DEFAULT_DEGRADE = ("none:0", "diffusion:L8", "gaussian_noise:1,2,3,4,5", "blur:1,2,3,4,5", "jpeg:1,2,3,4,5",
                   "lowres:1,2,3,4,5")


@dataclass
class ProbeConfig:
    model: str = "tiny"
    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    degrade: list[str] = field(default_factory=lambda: list(DEFAULT_DEGRADE))
    limit: int | None = 150          # questions per dataset (None: all)
    map_limit: int = 150             # held-out questions per dataset for the confidence map
    seed: int = 0                    # degradation noise seed
    max_new_tokens: int = 64
    saliency: str = "spectral"       # key-region noise: spectral, model (the probed model's tower) or a CLIP folder

    def sweeps(self) -> list[tuple[str, list[int]]]:
        """(kind, levels) per degradation kind, in first-mention order; repeated kinds are merged."""
        merged: dict[str, list[int]] = {}
        for spec in self.degrade:
            kind, levels = parse_degrade_spec(spec)
            merged.setdefault(kind, [])
            merged[kind] += [lv for lv in levels if lv not in merged[kind]]
        return list(merged.items())


@dataclass
class Dataset:
    """The probed questions of one data spec, the rows that failed to load, and the map's questions."""

    spec: str
    samples: list[Sample]
    errors: list[dict] = field(default_factory=list)
    map_samples: list[Sample] | None = None  # None: fit on the probed questions' clean images


def held_out_split(spec: str) -> str | None:
    name, _, split = spec.partition(":")
    return f"{name}:val" if split in ("test", "train") and name in ("easyvqa", "shapes") else None


def load_datasets(cfg: ProbeConfig) -> list[Dataset]:
    """Every data spec of ``cfg``; malformed rows become error entries, never exceptions."""
    out = []
    for spec in cfg.data:
        errors: list[dict] = []
        samples = load_data(spec, errors)
        held = held_out_split(spec)
        out.append(Dataset(spec, samples[: cfg.limit] if cfg.limit else samples, errors,
                           load_data(held)[: cfg.map_limit] if held else None))
    return out


def record_key(data: str, sample_id: str, kind: str, level: int) -> str:
    return f"{data}|{sample_id}|{kind}|{level}"


class _Prepare:
    """Images of an item as the model will see them: shrunk to the pixel guard, then degraded."""

    def __init__(self, cfg: ProbeConfig, max_pixels: int | None, saliency=None):
        self.cfg, self.max_pixels, self.saliency = cfg, max_pixels, saliency

    def __call__(self, item: Item) -> list:
        kind, level = item.fields["kind"], item.fields["level"]
        out = []
        for im in item.sample.load_images(max_pixels=self.max_pixels):
            im = fit_image(im, self.max_pixels)
            if kind == "key_region" and self.saliency is not None:
                out.append(key_region_noise(im, level, saliency=self.saliency(im), seed=self.cfg.seed,
                                            key=item.sample.id))
            else:
                out.append(degrade(im, kind, level, seed=self.cfg.seed, key=item.sample.id))
        return out


def probe_identity_from(cfg: ProbeConfig, backend_ident: dict) -> dict:
    """The probe's run identity: its config and what of the backend changes an answer."""
    return {"task": "probe", **asdict(cfg), **backend_ident, "model": cfg.model}


def probe_identity(cfg: ProbeConfig, backend: Backend) -> dict:
    return probe_identity_from(cfg, backend_identity(backend))


def fit_map(records: list[dict]) -> ConfidenceMap | None:
    """Platt map of C fitted on the map records; None when fewer than 2 answers have a C."""
    ok = [r for r in records if "error" not in r and r["confidence"].get("mean") is not None]
    if len(ok) < 2:
        return None
    return ConfidenceMap("platt").fit([r["confidence"]["mean"] for r in ok], [r["correct"] for r in ok])


def run_probe(backend: Backend, cfg: ProbeConfig, out: str | Path, *, datasets: Sequence[Dataset] | None = None,
              progress: Progress | None = None, batch: int = 64, overwrite: bool = False) -> dict:
    """The whole sweep; returns the summary (also written to ``out/summary.json`` with the report)."""
    t_start = time.perf_counter()
    progress = progress or Progress()
    timer = Timer()
    sweeps = cfg.sweeps()
    datasets = list(datasets) if datasets is not None else load_datasets(cfg)
    sh = shard.session(out)  # None in a plain process (WORLD_SIZE unset or 1)
    run = RunDir(out, probe_identity(cfg, backend), overwrite=overwrite) if sh is None or sh.main else None
    regrade_at_end = False
    if sh is None and shard.rank_files(run.path):  # a killed sharded run's leftovers (never there otherwise)
        if overwrite:
            shard.remove_rank_files(run.path)
        else:  # their answers were graded without the confidence map: regrade everything at the end
            regrade_at_end = shard.absorb(run) > 0
    saliency = None
    if cfg.saliency != "spectral" and any(kind == "key_region" for kind, _ in sweeps):
        from catts.perception.saliency import load_saliency

        saliency = load_saliency(cfg.model if cfg.saliency == "model" else cfg.saliency)
    max_pixels = getattr(backend, "max_pixels", None)
    prepare = _Prepare(cfg, max_pixels, saliency)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens)
    if sh is not None:
        return _probe_shard(sh, backend, run, datasets, sweeps, prepare, params, batch, overwrite, progress,
                            t_start)
    # kept in memory from here on (the JSONL is read once); failed generations are asked again
    records = [r for r in run.records() if r.get("stage") != "generate"]
    done = {r["key"] for r in records}
    maps: dict[str, ConfidenceMap | None] = {}
    reporter = _Reporter(run.path, cfg.seed)  # forks: before this job starts any thread
    threading.Thread(target=_warm_imports, daemon=True).start()
    try:
        for ds in datasets:
            load_errors = [e for e in load_error_records(ds.spec, ds.errors) if e["key"] not in done]
            run.append(load_errors)
            records += load_errors
            map_items = [Item(s, f"{ds.spec}|map|{s.id}", {"data": ds.spec, "split": "map", "kind": "none",
                                                           "level": 0}) for s in (ds.map_samples or ds.samples)]
            todo = [it for it in map_items if it.key not in done]
            progress.phase(f"{ds.spec}: answering clean questions to fit the confidence map", len(map_items),
                           len(map_items) - len(todo))
            ask(backend, todo, params, run, prepare=prepare, chunk=batch, progress=progress, timer=timer,
                on_records=records.extend)
            maps[ds.spec] = fit_map([r for r in records if r.get("split") == "map" and r.get("data") == ds.spec])
            items = [Item(s, record_key(ds.spec, s.id, kind, level), {"data": ds.spec, "kind": kind, "level": level})
                     for kind, levels in sweeps for level in levels for s in ds.samples]
            todo = [it for it in items if it.key not in done]
            progress.phase(f"{ds.spec}: probing {len(sweeps)} degradation kinds", len(items), len(items) - len(todo))
            example = _example_image(ds.samples, max_pixels)
            groups: dict[str, list[dict]] = {kind: [] for kind, _ in sweeps}
            wanted = {it.key for it in items}  # a resume with a smaller --limit reports only its own questions
            for r in records:
                if r["key"] in wanted:
                    groups[r["kind"]].append(r)
            left = {kind: sum(1 for it in todo if it.fields["kind"] == kind) for kind, _ in sweeps}

            def finished(new: list[dict], spec=ds.spec, groups=groups, left=left, example=example) -> None:
                records.extend(new)
                for r in new:
                    if r.get("kind") in groups:
                        groups[r["kind"]].append(r)
                        left[r["kind"]] -= 1
                for kind, n in left.items():
                    if n == 0:
                        left[kind] = -1  # submitted once
                        reporter.submit(spec, kind, dict(sweeps)[kind], groups[kind], example)

            finished([])
            ask(backend, todo, params, run, prepare=prepare, cmap=maps[ds.spec], chunk=batch, progress=progress,
                timer=timer, on_records=finished)
        progress.phase("summary and figures")
        level_summaries = reporter.results()
    finally:
        reporter.close()
    total = time.perf_counter() - t_start
    timing = {"total_seconds": round(total, 2), "model_seconds": round(timer.model, 2),
              "overhead_share": round((total - timer.model) / total, 4) if total else 0.0}
    if regrade_at_end:
        summary = regrade_probe(run, run.records(), timing)
    else:
        summary = finish_probe(run, [ds.spec for ds in datasets], sweeps, level_summaries, maps, records, timing)
    progress.close()
    return summary


def _probe_shard(sh, backend: Backend, run: RunDir | None, datasets: Sequence[Dataset], sweeps, prepare, params,
                 batch: int, overwrite: bool, progress: Progress, t_start: float) -> dict:
    """One process of a sharded probe (``catts.jobs.shard``): every rank answers its share of all questions (map
    and probe alike, so no rank waits on the map), rank 0 merges them, fits the maps and grades the answers with
    them by ``regrade_probe`` (from the stored traces), writes figures and summary; every rank returns it."""
    items, errors = [], []
    for ds in datasets:
        errors += load_error_records(ds.spec, ds.errors)
        items += [Item(s, f"{ds.spec}|map|{s.id}", {"data": ds.spec, "split": "map", "kind": "none", "level": 0})
                  for s in (ds.map_samples or ds.samples)]
        items += [Item(s, record_key(ds.spec, s.id, kind, level), {"data": ds.spec, "kind": kind, "level": level})
                  for kind, levels in sweeps for level in levels for s in ds.samples]
    order = [e["key"] for e in errors] + [it.key for it in items]

    def setup() -> None:
        run.append([e for e in errors if e["key"] not in run.done_keys()])

    done = sh.start(run, order, overwrite, setup)
    todo = sh.take([it for it in items if it.key not in done])
    progress.phase(f"probe {backend.name} (rank {sh.rank}/{sh.size})", total=len(todo), done=0)
    timer = Timer()
    ask(backend, todo, params, sh.writer, prepare=prepare, chunk=batch, progress=progress, timer=timer)
    sh.finish(run, order)
    model_seconds = sum(sh.gather(timer.model))
    summary = None
    if sh.main:
        progress.phase("summary and figures")
        total = time.perf_counter() - t_start
        busy = total * sh.size  # process-seconds; model_seconds is summed over the processes
        timing = {"total_seconds": round(total, 2), "model_seconds": round(model_seconds, 2), "processes": sh.size,
                  "overhead_share": round((busy - model_seconds) / busy, 4) if busy else 0.0}
        summary = regrade_probe(run, run.records(), timing)
    summary = sh.share(summary)
    sh.close()
    progress.close()
    return summary


def finish_probe(run: RunDir, specs: list[str], sweeps: list[tuple[str, list[int]]], level_summaries: dict,
                 maps: dict, records: list[dict], timing: dict) -> dict:
    """The summary from level summaries: the finding per dataset, levels.csv, summary.md and summary.json."""
    from catts.report.finding import finding, write_levels_csv, write_markdown

    levels = [level_summaries[(spec, kind, level)] for spec in specs for kind, lvls in sweeps for level in lvls]
    summary = {"n_bins": N_BINS, "levels": levels,
               "finding": {spec: finding([lv for lv in levels if lv["data"] == spec], maps.get(spec))
                           for spec in specs},
               "confidence_maps": {spec: _map_info(maps.get(spec)) for spec in specs},
               "n_records": len(records), "errors": errors_of(records), "timing": timing}
    write_levels_csv(run.path / "levels.csv", levels)
    write_markdown(run.path / "summary.md", summary)
    run.write_summary(summary)
    return summary


def regrade_probe(run: RunDir, records: list[dict], timing: dict | None = None) -> dict:
    """Summary, figures and maps of a probe run from its (regraded) records; maps are refitted first.
    ``timing``: of the run that made the answers (default: the one in its summary.json)."""
    from catts.jobs.ask import regrade_records
    from catts.report.figures import report_kind

    cfg = ProbeConfig(**{k: run.config[k] for k in ProbeConfig.__dataclass_fields__ if k in run.config})
    sweeps = cfg.sweeps()
    specs = list(cfg.data)
    traces = run.traces()
    # the maps are refitted from the regraded map answers first; every record keeps its place
    map_records = regrade_records([r for r in records if r.get("split") == "map"], traces)
    maps = {spec: fit_map([r for r in map_records if r.get("data") == spec]) for spec in specs}
    others = regrade_records([r for r in records if r.get("split") != "map"], traces, lambda r: maps.get(r.get("data")))
    in_order = {"map": iter(map_records), "probe": iter(others)}
    regraded = [next(in_order["map" if r.get("split") == "map" else "probe"]) for r in records]
    run.rewrite(regraded)
    level_summaries = {}
    for spec in specs:
        example = None
        try:
            example = _example_image(load_data(spec, []), run.config.get("max_pixels"))
        except Exception:  # noqa: BLE001 - figures go without the image strip when the data is gone
            pass
        for kind, levels in sweeps:
            group = [r for r in regraded if r.get("data") == spec and r.get("kind") == kind and r.get("split") != "map"]
            for lv in report_kind(run.path, spec, kind, levels, group, example, cfg.seed):
                level_summaries[(spec, kind, lv["level"])] = lv
    timing = json_timing(run) if timing is None else timing
    return finish_probe(run, specs, sweeps, level_summaries, maps, regraded, timing)


def json_timing(run: RunDir) -> dict:
    """The timing of the run that produced the answers (a regrade calls no model)."""
    try:
        return json.loads((run.path / "summary.json").read_text()).get("timing", {})
    except (OSError, ValueError):
        return {}


def _example_image(samples: Sequence[Sample], max_pixels: int | None) -> tuple | None:
    """(id, image as the model sees it) of the first readable sample, for the figures' image strip."""
    for s in samples[:10]:
        try:
            return s.id, fit_image(s.load_images(max_pixels=max_pixels)[0], max_pixels)
        except Exception:  # noqa: BLE001 - the figure goes without its image strip
            continue
    return None


def _map_info(cmap: ConfidenceMap | None) -> dict | None:
    if cmap is None:
        return None
    return cmap.to_dict() | {"degenerate": cmap.degenerate}


def _report_kind(*args) -> list[dict]:
    """``catts.report.figures.report_kind``, imported in the worker (matplotlib stays out of the main process)."""
    from catts.report.figures import report_kind

    return report_kind(*args)


def _warm_imports() -> None:
    """Import what the map fit needs on a thread while the model answers (sklearn takes about 1 s)."""
    import sklearn.linear_model  # noqa: F401


class _Reporter:
    """Summaries and figures of each finished (dataset, kind) in a worker process, off the critical path."""

    def __init__(self, out: Path, seed: int):
        self.out, self.seed = out, seed
        self.futures: list[Future] = []
        if sys.platform == "linux":
            # forked now, before the job starts its own threads; "spawn" would re-run an unguarded user
            # script's top level in the worker. The worker uses numpy, Pillow and matplotlib, never torch.
            self.pool: Executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
            self.pool.submit(int).result()
        else:
            self.pool = ThreadPoolExecutor(1)

    def submit(self, data: str, kind: str, levels: list[int], records: list[dict], example: tuple | None) -> None:
        self.futures.append(self.pool.submit(_report_kind, self.out, data, kind, levels, list(records),
                                             example if kind != "none" else None, self.seed))

    def results(self) -> dict[tuple, dict]:
        out = {}
        for f in self.futures:
            for lv in f.result():
                out[(lv["data"], lv["kind"], lv["level"])] = lv
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
