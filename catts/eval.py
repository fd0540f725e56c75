"""``catts eval``: greedy answers of one model on one dataset, per-sample JSONL and a summary.

Every record holds the gold and extracted answer, how it was extracted (or why not), correctness,
the trace's confidences, token count and timing. A sample whose images cannot be read is recorded
with its error and left out of accuracy (counted in ``n_errors``); an answer that cannot be
extracted counts as wrong and in ``unparsed_rate``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from catts.answers import answers_match, extract_answer
from catts.confidence import trace_confidences
from catts.data import DataError, Sample
from catts.models.backend import Backend, Prompt, SamplingParams, Trace
from catts.prompts import build_prompt
from catts.runs import RunDir


def to_prompt(sample: Sample, images=None) -> Prompt:
    """The backend request for a sample (images loaded now unless given)."""
    return Prompt(images=images if images is not None else sample.load_images(), text=build_prompt(sample),
                  key=sample.id)


def grade(sample: Sample, trace: Trace) -> dict:
    """Extraction, correctness and confidences of one trace (the shared part of every record)."""
    ext = extract_answer(trace.text, sample.answer_type, sample.options)
    return {"prediction": ext.answer, "extraction": ext.method, "unparsed_reason": ext.reason or None,
            "correct": answers_match(ext.answer, sample.answer, sample.answer_type),
            "confidence": trace_confidences(trace.top_logprobs), "num_tokens": trace.num_tokens,
            "finish_reason": trace.finish_reason, "logprob_source": trace.logprob_source, "text": trace.text}


def evaluate(backend: Backend, samples: Sequence[Sample], out: str | Path, *, max_new_tokens: int = 128,
             config: dict | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """Greedy-evaluate ``samples``; resumes a killed run in ``out``; returns the summary."""
    run = RunDir(out, {"task": "eval", "model": backend.name, "max_new_tokens": max_new_tokens, **(config or {})})
    done = run.done_keys()
    todo = [s for s in samples if s.id not in done]
    if progress:
        progress(len(samples) - len(todo))
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    chunk = max(1, getattr(backend, "batch_size", 16))
    t_start = time.time()
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        records, ready = [], []
        for s in batch:
            try:
                ready.append((s, to_prompt(s)))
            except DataError as e:
                records.append(_base(s) | {"error": str(e), "correct": False})
        t0 = time.time()
        traces = backend.generate([p for _, p in ready], params) if ready else []
        seconds = time.time() - t0
        for (s, _), (trace,) in zip(ready, traces):
            records.append(_base(s) | grade(s, trace) | {"seconds": seconds / len(ready), "batch_size": len(ready)})
        run.append(records)
        if progress:
            progress(len(batch))
    summary = summarize(run.records())
    summary["wall_seconds_this_session"] = round(time.time() - t_start, 2)
    run.write_summary(summary)
    return summary


def _base(s: Sample) -> dict:
    return {"id": s.id, "question_type": s.question_type, "answer_type": s.answer_type, "gold": s.answer}


def summarize(records: list[dict]) -> dict:
    """Accuracy (errors excluded), unparsed rate, per-question-type accuracy, tokens and confidence."""
    ok = [r for r in records if "error" not in r]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for r in ok:
        by_type[r["question_type"] or "all"].append(bool(r["correct"]))
    n = len(ok)
    return {
        "n": n,
        "accuracy": float(np.mean([r["correct"] for r in ok])) if n else float("nan"),
        "unparsed_rate": float(np.mean([r["prediction"] is None for r in ok])) if n else float("nan"),
        "n_errors": len(records) - n,
        "errors": [{"id": r["id"], "error": r["error"]} for r in records if "error" in r][:100],
        "per_question_type": {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_type.items())},
        "mean_tokens": float(np.mean([r["num_tokens"] for r in ok])) if n else float("nan"),
        "mean_confidence": float(np.nanmean([r["confidence"]["mean"] for r in ok])) if n else float("nan"),
        "generation_seconds": float(sum(r["seconds"] for r in ok)),
    }
