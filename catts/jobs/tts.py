"""``catts tts``: CA-TTS against its baselines, every module subset, N and gate threshold, on the same samples.

    items (question x degradation level) -> images (degraded; the self-check's noised copy)
      -> modules (catts.tts.modules: samples, self-check, plans, voter, critic + reflection; batched)
      -> schedules (catts.tts.schedule: every method from the same outputs) -> one record per item
      -> summary (catts.tts.report: methods, ablations, scaling, gate curve, bootstrap intervals)

Items go in chunks; a chunk's records are appended when all its methods are computed, so a killed
run resumes at the first unfinished chunk without redoing finished items. An item whose image
cannot be prepared is an error record (stage ``image``); a module call that fails for one item is
on that item's record under ``errors`` and the item takes part without that module.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from catts.jobs import shard
from catts.jobs.ask import Item, base_record, error_record
from catts.jobs.eval import load_error_records
from catts.jobs.probe import Dataset, _Prepare, record_key
from catts.jobs.progress import Progress
from catts.jobs.rundir import RunDir
from catts.models.backend import Backend
from catts.perception.degrade import degrade, parse_degrade_spec
from catts.tts import modules as M
from catts.tts.prompts import MODULES
from catts.tts.schedule import WEIGHTS, Needs, Schedule, baselines, run_gated, run_schedule

log = logging.getLogger("catts")

DEFAULT_DATA = ("easyvqa:test", "shapes:test")
DEFAULT_DEGRADE = ("diffusion:0,285,571,856",)
GATE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass
class TTSConfig:
    model: str = "tiny"
    expert: str = "tiny-expert"         # a model folder / embedded name; "base" = the base model itself
    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    degrade: list[str] = field(default_factory=lambda: list(DEFAULT_DEGRADE))
    limit: int | None = 100             # questions per dataset
    n: int = 8
    modules: list[str] = field(default_factory=lambda: list(MODULES))
    planner: bool = True
    voter: str = "likelihood"           # likelihood | generative
    weight: str = "mean"                # internal-vote weight: mean (C, the paper's), answer_prob, trace_prob
    temperature: float = 1.0
    top_k: int = 40
    taus: tuple = (0.5, 0.5, 0.5)
    check_level: int = 500              # diffusion t of the self-check's noised copy
    alpha: float = 0.5
    beta: float = 0.1
    scaling: list[int] = field(default_factory=list)    # e.g. [1, 2, 4, 8, 16, 32]
    gate_threshold: float = 0.9
    gate_wave: int = 2
    retries: int = 3
    ablations: bool = True              # every module subset, expert = base, the three weights
    seed: int = 0
    tokens: M.RoleTokens = field(default_factory=M.RoleTokens)

    def validate(self) -> None:
        if self.n < 1 or any(k < 1 for k in self.scaling):
            raise ValueError("--n and --scaling values must be >= 1")
        bad = [m for m in self.modules if m not in MODULES]
        if bad or not self.modules:
            raise ValueError(f"--modules: expected some of {', '.join(MODULES)}, got {', '.join(bad) or 'none'}")
        if self.voter not in ("likelihood", "generative"):
            raise ValueError(f"--voter {self.voter!r}: likelihood or generative")
        if self.weight not in WEIGHTS:
            raise ValueError(f"--weight {self.weight!r}: one of {', '.join(WEIGHTS)}")
        if not 0 <= self.check_level <= 999 or not 0 < self.gate_threshold <= 1 or self.gate_wave < 1:
            raise ValueError("--check-level must be in 0..999, --gate-threshold in (0, 1], --gate-wave >= 1")
        for spec in self.degrade:
            parse_degrade_spec(spec)

    @property
    def n_max(self) -> int:
        return max([self.n, *self.scaling])

    def sweeps(self) -> list[tuple[str, int]]:
        seen = []
        for spec in self.degrade:
            kind, levels = parse_degrade_spec(spec)
            seen += [(kind, lv) for lv in levels if (kind, lv) not in seen]
        return seen


def tts_identity(cfg: TTSConfig, base_ident: dict, expert_ident: dict | None) -> dict:
    return {"task": "tts", **asdict(cfg), **base_ident, "model": cfg.model,
            "expert_backend": expert_ident}


def items_of(datasets: Sequence[Dataset], cfg: TTSConfig) -> list[Item]:
    return [Item(s, record_key(ds.spec, s.id, kind, level), {"data": ds.spec, "kind": kind, "level": level})
            for ds in datasets for kind, level in cfg.sweeps() for s in ds.samples]


def schedules(cfg: TTSConfig, experts: Sequence[str]) -> dict[str, dict]:
    """Every CA-TTS variant the run measures, by table: methods, ablations, weights, scaling."""
    mods = frozenset(cfg.modules)
    main = Schedule(cfg.n, "expert", mods, weight=cfg.weight, use_plan=cfg.planner, voter_mode=cfg.voter,
                    taus=tuple(cfg.taus))
    out = {"methods": {"ca-tts": main}, "ablations": {}, "weights": {}, "scaling": {}}
    if cfg.ablations:
        for r in range(len(MODULES) + 1):
            for subset in itertools.combinations(MODULES, r):
                if not subset:
                    continue
                name = " + ".join("sc + voter" if m == "self-consistency" else m for m in subset)
                out["ablations"][name] = Schedule(cfg.n, "expert", frozenset(subset), weight=cfg.weight,
                                                  use_plan=cfg.planner, voter_mode=cfg.voter, taus=tuple(cfg.taus))
        out["ablations"]["sc (no voter)"] = Schedule(cfg.n, "expert", frozenset({"self-consistency"}), voter=False,
                                                     weight=cfg.weight, use_plan=False)
        if "base" in experts:
            out["ablations"]["ca-tts, expert = base"] = Schedule(cfg.n, "base", mods, weight=cfg.weight,
                                                                 use_plan=cfg.planner, voter_mode=cfg.voter,
                                                                 taus=tuple(cfg.taus))
        for w in WEIGHTS:
            out["weights"][w] = Schedule(cfg.n, "expert", mods, weight=w, use_plan=cfg.planner, voter_mode=cfg.voter,
                                         taus=tuple(cfg.taus))
    for k in cfg.scaling:
        out["scaling"][str(k)] = Schedule(k, "expert", mods, weight=cfg.weight, use_plan=cfg.planner,
                                          voter_mode=cfg.voter, taus=tuple(cfg.taus))
    return out


class Runner:
    """Runs the modules for chunks of questions and computes every method's outcome."""

    def __init__(self, base: Backend, experts: dict[str, Backend], cfg: TTSConfig):
        self.base, self.cfg = base, cfg
        self.timer: Counter = Counter()
        self.table = schedules(cfg, list(experts))
        used = {s.expert for entries in self.table.values() for s in entries.values()}
        self.experts = {k: v for k, v in experts.items() if k in used}  # no base-as-expert work without ablations

    def modules(self, qs: list[M.Question], progress: Progress, done: int, total: int) -> None:
        cfg, t = self.cfg, self.timer
        progress.phase("tts: sampling", total, done)
        M.sample_answers(self.base, qs, cfg.n_max, cfg.temperature, cfg.top_k, cfg.seed, cfg.tokens.base, t)
        if "self-check" in cfg.modules:
            progress.phase("tts: self-check", total, done)
            M.self_check(self.base, qs, cfg.alpha, cfg.beta, cfg.tokens.base, t)
        for name, expert in self.experts.items():
            progress.phase(f"tts: planner and voter ({name})", total, done)
            if cfg.planner:
                M.plan(name, expert, qs, cfg.tokens.planner, t)
            if cfg.voter == "likelihood":
                M.score_candidates(name, expert, qs, t)
        progress.phase("tts: critic and reflection", total, done)
        for _ in range(4):  # requests come in rounds: a voter verdict can change a leader
            needs = self.outcomes(qs, collect=True)
            if not needs:
                break
            for name, expert in self.experts.items():
                M.generative_votes(name, expert, [(q, c) for kind, q, e, c in needs if kind == "voter" and e == name],
                                   cfg.retries, cfg.tokens.voter, t)
                M.reflect(name, expert, self.base, [(q, lead) for kind, q, e, lead in needs
                                                    if kind == "reflect" and e == name], cfg.tokens, t)

    def outcomes(self, qs: list[M.Question], collect: bool = False):
        """Every method of every question; with ``collect``, the module requests still missing instead."""
        needs, records = [], []
        for q in qs:
            got: dict = {"methods": {}, "ablations": {}, "weights": {}, "scaling": {}, "gated": {}}
            for table, entries in self.table.items():
                for name, s in entries.items():
                    o = run_schedule(q, s)
                    needs += o if isinstance(o, Needs) else []
                    if not isinstance(o, Needs):
                        if table == "scaling":
                            got["scaling"][name] = {"ca-tts": o.record(q)} | {
                                k: v.record(q) for k, v in baselines(q, s.n).items()}
                        else:
                            got[table][name] = o.record(q)
            thresholds = sorted({*GATE_THRESHOLDS, self.cfg.gate_threshold})
            for th in thresholds:
                o = run_gated(q, self.cfg.n, "expert", th, self.cfg.gate_wave, self.cfg.weight, self.cfg.voter,
                              tuple(self.cfg.taus))
                needs += o if isinstance(o, Needs) else []
                if not isinstance(o, Needs):
                    got["gated"][str(th)] = o.record(q)
            if not collect:
                got["methods"] = {k: v.record(q) for k, v in baselines(q, self.cfg.n).items()} | got["methods"]
                if str(self.cfg.gate_threshold) in got["gated"]:
                    got["methods"]["ca-tts-gated"] = got["gated"][str(self.cfg.gate_threshold)]
                records.append(got)
        return needs if collect else records


def question_record(q: M.Question, got: dict) -> dict:
    return base_record(q.item) | {
        "prediction": got["methods"].get("ca-tts", {}).get("answer"),
        "correct": got["methods"].get("ca-tts", {}).get("correct", False),
        "greedy": q.greedy, "samples": q.samples, "self_check": q.check,
        "plan": q.plan, "voter": {"loglik": q.loglik,
                                  "generative": [{"expert": e, "candidates": list(c), **v}
                                                 for (e, c), v in q.gen_votes.items()]},
        "reflections": [{"expert": e, **v} for (e, _), v in q.reflections.items()],
        **got, "errors": q.errors, "seconds": {k: round(v, 5) for k, v in q.seconds.items()}}


class _Images:
    """The image the base model sees (degraded like the probe's) and the self-check's noised copy of it."""

    def __init__(self, cfg: TTSConfig, max_pixels: int | None):
        self.prepare = _Prepare(cfg, max_pixels)  # duck-typed: it reads cfg.seed only
        self.cfg = cfg

    def __call__(self, item: Item):
        image = self.prepare(item)[0]
        return image, degrade(image, "diffusion", self.cfg.check_level, seed=self.cfg.seed + 1, key=item.key)


def check_backends(base: Backend, experts: dict[str, Backend], cfg: TTSConfig) -> None:
    """What the modules need of the backends, checked before anything runs (one clear line each)."""
    if "self-check" in cfg.modules and base.capabilities.contrastive == "none":
        raise ValueError(f"{base.name} cannot run the self-check (contrastive decoding between two images); "
                         "leave it out: --modules self-consistency,reflection")
    for name, expert in experts.items():
        if cfg.voter == "likelihood" and not expert.capabilities.teacher_forcing and name == "expert":
            raise ValueError(f"expert {expert.name} cannot score given answers (the likelihood voter); use "
                             "--voter generative")


def run_tts(base: Backend, experts: dict[str, Backend], cfg: TTSConfig, out: str | Path,
            datasets: Sequence[Dataset], *, progress: Progress | None = None, chunk: int = 100,
            overwrite: bool = False, identity: dict | None = None) -> dict:
    """Run CA-TTS and every comparison over ``datasets`` x the degradation levels; returns the summary."""
    from catts.tts.report import write_report

    cfg.validate()
    check_backends(base, experts, cfg)
    if cfg.voter == "likelihood" and "base" in experts and not base.capabilities.teacher_forcing:
        experts = {k: v for k, v in experts.items() if k != "base"}  # no base-as-expert ablation it cannot run
    progress = progress or Progress()
    sh = shard.session(out)  # None in a plain process (WORLD_SIZE unset or 1)
    run = RunDir(out, identity or {"task": "tts", **asdict(cfg)}, overwrite=overwrite) if sh is None or sh.main \
        else None
    items = items_of(datasets, cfg)
    order = [it.key for it in items]

    def record_load_errors() -> None:
        done = run.done_keys()
        for ds in datasets:
            run.append([e for e in load_error_records(ds.spec, ds.errors) if e["key"] not in done])

    if sh is None:
        if shard.rank_files(run.path):  # a killed sharded run's leftovers (never there otherwise)
            if overwrite:
                shard.remove_rank_files(run.path)
            else:
                shard.absorb(run, order)
        record_load_errors()
        done = run.done_keys()
    else:  # accelerate launch / torchrun: rank 0 records the load errors, each process takes its share
        done = sh.start(run, order, overwrite, record_load_errors)
    todo = [it for it in items if it.key not in done]
    if sh is not None:
        todo = sh.take(todo)
    sink = run if sh is None else sh.writer
    runner, prepare = Runner(base, experts, cfg), _Images(cfg, getattr(base, "max_pixels", None))
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    finished = len(items) - len(todo)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_prepare_chunk, chunks[0], prepare) if chunks else None
        for k, part in enumerate(chunks):
            prepared = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_prepare_chunk, chunks[k + 1], prepare)
            qs = [q for q in prepared if isinstance(q, M.Question)]
            records = [q for q in prepared if isinstance(q, dict)]
            if qs:
                runner.modules(qs, progress, finished, len(items))
                records += [question_record(q, got) for q, got in zip(qs, runner.outcomes(qs))]
            sink.append(records)
            finished += len(part)
            progress.advance(len(part))
    if sh is not None:
        return _finish_shard(sh, run, items, cfg, datasets, runner, t0)
    wanted = {it.key for it in items}
    records = [r for r in run.records() if r["key"] in wanted or r.get("stage") == "load"]
    timing = {"seconds": round(time.perf_counter() - t0, 2), "model_seconds": {k: round(v, 2) for k, v in
                                                                               runner.timer.items()}}
    return write_report(run, records, cfg, timing, n_input_rows=len(items) + sum(len(d.errors) for d in datasets))


def _finish_shard(sh, run, items, cfg, datasets, runner, t0) -> dict:
    """The end of :func:`run_tts` in one process of a sharded run: rank 0 merges and reports; every
    rank returns rank 0's summary."""
    from catts.tts.report import write_report

    sh.finish(run, [it.key for it in items])
    model_seconds = sum(sh.gather(runner.timer), Counter())
    summary = None
    if sh.main:
        wanted = {it.key for it in items}
        records = [r for r in run.records() if r["key"] in wanted or r.get("stage") == "load"]
        timing = {"seconds": round(time.perf_counter() - t0, 2), "processes": sh.size,
                  "model_seconds": {k: round(v, 2) for k, v in model_seconds.items()}}
        summary = write_report(run, records, cfg, timing,
                               n_input_rows=len(items) + sum(len(d.errors) for d in datasets))
    summary = sh.share(summary)
    sh.close()
    return summary


def _prepare_chunk(items: Sequence[Item], prepare: _Images) -> list:
    out = []
    for item in items:
        try:
            image, noised = prepare(item)
            out.append(M.Question(item, image, noised))
        except Exception as e:  # noqa: BLE001 - a bad image is this item's error, never the run's
            msg = str(e) if type(e).__name__ == "DataError" else f"sample {item.sample.id!r}: {type(e).__name__}: {e}"
            log.warning("%s", msg)
            out.append(error_record(item, msg, "image"))
    return out
