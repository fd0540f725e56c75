"""``catts eval``: greedy answers of one model on one dataset, per-sample JSONL and a summary.

Every input row ends up as one record: an answer (gold, extracted answer, how it was extracted or
why not, correctness, every confidence, tokens, timing), or an error (a row that could not be
loaded, an image that could not be read, a generation that failed). The summary is
:func:`catts.jobs.summary.summarize` over this invocation's rows, plus per-question-type accuracy
and every error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from catts.data import Sample
from catts.jobs import shard
from catts.jobs.ask import Item, Timer, ask
from catts.jobs.progress import Progress
from catts.jobs.rundir import RunDir
from catts.jobs.summary import by_field, errors_of, summarize
from catts.models.backend import Backend, SamplingParams


def backend_identity(backend: Backend) -> dict:
    """What of the backend changes an answer: model, dtype, device type, pixel guard."""
    ident = getattr(backend, "identity", None)
    return dict(ident) if ident else {"model": backend.name}


def load_error_records(data: str, errors: Sequence[dict]) -> list[dict]:
    """One record per row that could not be loaded (``catts.data.load_data``'s error entries)."""
    return [{"key": f"{data}|row:{e.get('line')}", "id": e.get("id"), "data": data, "source": e.get("source"),
             "line": e.get("line"), "error": e["error"], "stage": "load", "correct": False, "prediction": None}
            for e in errors]


def evaluate(backend: Backend, samples: Sequence[Sample], out: str | Path, *, max_new_tokens: int = 128,
             config: dict | None = None, load_errors: Sequence[dict] = (), progress: Progress | None = None,
             overwrite: bool = False, batch: int | None = None) -> dict:
    """Greedy-evaluate ``samples``; resumes a killed run in ``out``; returns the summary.

    ``load_errors``: rows of the data file that could not be loaded (recorded, so every row is
    accounted for in the run folder). ``config`` adds run-identity fields (e.g. the data spec).
    """
    progress = progress or Progress()
    t_start = time.perf_counter()
    data = (config or {}).get("data", "")
    sh = shard.session(out)  # None in a plain process (WORLD_SIZE unset or 1)
    run = RunDir(out, {"task": "eval", **backend_identity(backend), "max_new_tokens": max_new_tokens,
                       **(config or {})}, overwrite=overwrite) if sh is None or sh.main else None
    seen: set[str] = set()
    items, dup_errors = [], []
    for s in samples:
        if s.id in seen:  # a second row with the same id would be taken as done on resume
            dup_errors.append({"line": f"id:{s.id}:{len(dup_errors)}", "id": s.id,
                               "error": f"sample {s.id!r}: duplicate id, row skipped"})
            continue
        seen.add(s.id)
        items.append(Item(s, key=s.id))
    errors = load_error_records(data, [*load_errors, *dup_errors])
    if sh is not None:  # accelerate launch / torchrun: this process's share, records merged by rank 0
        order = [it.key for it in items]
        done = sh.start(run, order, overwrite,
                        lambda: run.append([e for e in errors if e["key"] not in run.done_keys()]))
        todo = sh.take([it for it in items if it.key not in done])
        return _finish_shard(sh, backend, run, items, errors, todo, order, max_new_tokens, batch, progress, t_start)
    if shard.rank_files(run.path):  # a killed sharded run's leftovers (never there otherwise)
        if overwrite:
            shard.remove_rank_files(run.path)
        else:
            shard.absorb(run, [it.key for it in items])
    done = run.done_keys()
    run.append([e for e in errors if e["key"] not in done])
    todo = [it for it in items if it.key not in done]
    progress.phase(f"eval {backend.name}", total=len(items), done=len(items) - len(todo))
    timer = Timer()
    ask(backend, todo, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens), run,
        chunk=batch or max(1, getattr(backend, "batch_size", 16)), progress=progress, timer=timer)
    wanted = {it.key for it in items} | {e["key"] for e in errors}
    records = [r for r in run.records() if r["key"] in wanted]
    summary = summarize_eval(records)
    summary["timing"] = {"wall_seconds_this_session": round(time.perf_counter() - t_start, 2),
                         "model_seconds_this_session": round(timer.model, 2)}
    run.write_summary(summary)
    progress.close()
    return summary


def _finish_shard(sh, backend, run, items, errors, todo, order, max_new_tokens, batch, progress, t_start) -> dict:
    """The rest of :func:`evaluate` in one process of a sharded run: every rank returns rank 0's summary."""
    progress.phase(f"eval {backend.name} (rank {sh.rank}/{sh.size})", total=len(todo), done=0)
    timer = Timer()
    ask(backend, todo, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens), sh.writer,
        chunk=batch or max(1, getattr(backend, "batch_size", 16)), progress=progress, timer=timer)
    sh.finish(run, order)
    model_seconds = sum(sh.gather(timer.model))
    summary = None
    if sh.main:
        wanted = {it.key for it in items} | {e["key"] for e in errors}
        summary = summarize_eval([r for r in run.records() if r["key"] in wanted])
        summary["timing"] = {"wall_seconds_this_session": round(time.perf_counter() - t_start, 2),
                             "model_seconds_this_session": round(model_seconds, 2), "processes": sh.size}
        run.write_summary(summary)
    summary = sh.share(summary)
    sh.close()
    progress.close()
    return summary


def summarize_eval(records: list[dict]) -> dict:
    """The eval summary: :func:`summarize` with intervals, per-question-type accuracy, every error."""
    answered = [r for r in records if "error" not in r]
    return {"n_input_rows": len(records), **summarize(records, ci=True),
            "per_question_type": by_field(answered, "question_type"),
            "generation_seconds": round(sum(r.get("seconds", 0.0) for r in answered), 3),
            "errors": errors_of(records)}
