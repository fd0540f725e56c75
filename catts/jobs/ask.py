"""The one path from question to record: ask the model, grade the answer, record it.

Every job (eval, probe; next tts and train) goes through here, so every record has the same
fields and every answer the same extraction and confidences:

    items (sample + key + images to show)  ->  ask()  ->  backend.generate  ->  grade()  ->  RunDir

- ``grade`` reads the answer with ``catts.answers`` (one box scanner, strict rules) and computes
  every confidence: the trace confidences (``mean`` = C, the paper's confidence and its NMLP;
  ``tail``, ``bottom10``, ``lowest_window``), ``answer_prob`` (the extracted answer's probability,
  from the span it was read from), ``trace_prob`` (exp of the mean log-probability of the chosen
  tokens), ``sequence_prob`` (exp of their summed log-probability: the whole completion's probability) and ``c_mapped`` (C through a fitted monotone map, when one is given). It works from a
  trace and the record's own gold, options and answer type, so ``catts regrade`` can redo it from
  stored traces without the model.
- ``ask`` prepares the next chunk's images on a worker thread while the model answers this one,
  records a sample whose images cannot be prepared (or whose generation fails) with its error,
  and appends records together with their per-token traces.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from catts.answers import answers_match, extract_answer
from catts.confidence import trace_confidences
from catts.confidence.answer import answer_probability, sequence_probability, trace_probability
from catts.data import DataError, Sample
from catts.data.benchmarks import task_of
from catts.data.image import fit_image
from catts.jobs.progress import Progress
from catts.jobs.rundir import RunDir
from catts.models.backend import Backend, Prompt, SamplingParams, Trace
from catts.prompts import build_prompt

log = logging.getLogger("catts")


@dataclass
class Item:
    """One question to ask: the sample, its record key (unique in the run) and extra record fields."""

    sample: Sample
    key: str
    fields: dict = field(default_factory=dict)  # e.g. data, kind, level, split


@dataclass
class Timer:
    """Seconds inside model calls, to tell model time from everything else."""

    model: float = 0.0
    last_end: float = 0.0  # when the last model call ended (pipelined calls overlap)


def to_prompt(sample: Sample, images: list | None = None, key: str | None = None) -> Prompt:
    """The backend request for a sample: its images (loaded now unless given) and the base prompt."""
    return Prompt(images=images if images is not None else sample.load_images(), text=build_prompt(sample),
                  key=sample.id if key is None else key)


def base_record(item: Item) -> dict:
    s = item.sample
    return {"key": item.key, "id": s.id, **item.fields, "question_type": s.question_type,
            "answer_type": s.answer_type, "options": list(s.options), "gold": s.answer}


def error_record(item: Item, error: str, stage: str) -> dict:
    return base_record(item) | {"error": error, "stage": stage, "correct": False, "prediction": None}


def grade(trace: Trace, gold: str, answer_type: str, options: Sequence[str] = (), cmap=None, task=None,
          sample: Sample | None = None) -> dict:
    """Extraction, correctness and every confidence of one trace (the shared part of every record).

    ``task`` (with its ``sample``): a benchmark's own extraction and matching rules (e.g. MathVista's
    float precision) instead of catts's generic ones."""
    ext = task.extract(trace.text, sample) if task is not None else extract_answer(trace.text, answer_type, options)
    conf = trace_confidences(trace.top_logprobs)
    conf["answer_prob"] = answer_probability(trace, answer_type, options, ext) if ext.answer is not None else None
    conf["trace_prob"] = trace_probability(trace)
    conf["sequence_prob"] = sequence_probability(trace)
    if cmap is not None:
        conf["c_mapped"] = float(cmap(conf["mean"])) if np.isfinite(conf["mean"]) else None
    return {"prediction": ext.answer, "extraction": ext.method, "raw_answer": ext.raw or None,
            "unparsed_reason": ext.reason or None,
            "n_boxes": ext.n_boxes, "answer_span": list(ext.span) if ext.span else None,
            "correct": task.match(ext, sample) if task is not None else answers_match(ext.answer, gold, answer_type),
            "confidence": conf,
            "num_tokens": trace.num_tokens, "finish_reason": trace.finish_reason,
            "logprob_source": trace.logprob_source, "text": trace.text}


GRADED_FIELDS = ("prediction", "extraction", "raw_answer", "unparsed_reason", "n_boxes", "answer_span", "correct",
                 "confidence", "num_tokens", "finish_reason", "logprob_source", "text")


def regrade_record(record: dict, trace: Trace, cmap=None) -> dict:
    """The record graded anew from its stored trace (extraction rules or confidences may have changed)."""
    kept = {k: v for k, v in record.items() if k not in GRADED_FIELDS}
    return kept | grade(trace, record["gold"], record["answer_type"], record.get("options") or (), cmap)


def regrade_records(records: list[dict], traces: dict[str, Trace], cmap_of: Callable[[dict], object] = lambda r: None
                    ) -> list[dict]:
    """Every record graded anew from its trace, in order; records without a trace (errors) as they are."""
    return [regrade_record(r, traces[r["key"]], cmap_of(r)) if "error" not in r and r["key"] in traces else r
            for r in records]


class LoadImages:
    """The sample's own images, shrunk to the pixel guard as they are decoded (bounded memory)."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels

    def __call__(self, item: Item) -> list:
        return [fit_image(im, self.max_pixels) for im in item.sample.load_images(max_pixels=self.max_pixels)]


def _prepare(items: Sequence[Item], prepare: Callable[[Item], list]) -> list[tuple[Item, list | str]]:
    """(item, images) for each item, or (item, error message) where preparing failed."""
    out = []
    for item in items:
        try:
            out.append((item, prepare(item)))
        except DataError as e:  # its message already names the sample
            out.append((item, str(e)))
        except Exception as e:  # noqa: BLE001 - any bad input is this sample's error, never the run's
            out.append((item, f"sample {item.sample.id!r}: {type(e).__name__}: {e}"))
    return out


def ask(backend: Backend, items: Sequence[Item], params: SamplingParams, run: RunDir, *,
        prepare: Callable[[Item], list] | None = None, cmap=None, chunk: int = 64,
        progress: Progress | None = None, timer: Timer | None = None,
        on_records: Callable[[list[dict]], None] | None = None) -> None:
    """Ask every item (greedy or sampled per ``params``), grade, and append records and traces to ``run``.

    ``prepare(item)`` returns the images to show (default: the sample's own, shrunk to the backend's
    pixel guard; the probe's degrades them); it runs one chunk ahead on a worker thread. With
    ``params.n > 1`` a record holds the first trace (tts keeps its own records).
    ``on_records`` is called with each chunk's records once they are appended.
    """
    progress = progress or Progress()
    timer = timer or Timer()
    prepare = prepare or LoadImages(getattr(backend, "max_pixels", None))
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    if not chunks:
        return
    # a backend with ``submit`` (an async server client) gets the next chunk's requests before this chunk is
    # collected, so a server never idles at a chunk's tail; the others answer one chunk at a time
    pipelined = callable(getattr(backend, "submit", None))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_prepare, chunks[0], prepare)
        in_flight = None
        for k in range(len(chunks)):
            prepared = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_prepare, chunks[k + 1], prepare)
            if pipelined:
                started = _submit(backend, prepared, params)
                if in_flight is not None:
                    _collect(in_flight, backend, params, cmap, timer, run, on_records, progress)
                in_flight = started
                continue
            _collect((prepared, None, time.perf_counter()), backend, params, cmap, timer, run, on_records, progress)
        if in_flight is not None:
            _collect(in_flight, backend, params, cmap, timer, run, on_records, progress)


def _submit(backend, prepared, params: SamplingParams) -> tuple:
    ready = [to_prompt(item.sample, images, item.key) for item, images in prepared if not isinstance(images, str)]
    return prepared, backend.submit(ready, params) if ready else None, time.perf_counter()


def _collect(flight: tuple, backend, params, cmap, timer: Timer, run, on_records, progress: Progress) -> None:
    prepared, future, t0 = flight
    # overlapping calls: count model time from the later of this call's start and the previous call's end
    t0 = max(t0, timer.last_end)
    records, traces = _answer(backend, prepared, params, cmap, timer, future, t0)
    timer.last_end = time.perf_counter()
    run.append(records, traces)
    if on_records:
        on_records(records)
    progress.advance(len(records))


def _answer(backend: Backend, prepared, params: SamplingParams, cmap, timer: Timer, future=None,
            t0: float | None = None) -> tuple[list[dict], dict]:
    ready = [(item, to_prompt(item.sample, images, item.key))
             for item, images in prepared if not isinstance(images, str)]
    results: dict[str, tuple[Trace, float] | str] = {}
    if ready:
        t0 = time.perf_counter() if t0 is None else t0
        try:
            traces = future.result() if future is not None else backend.generate([p for _, p in ready], params)
            seconds = (time.perf_counter() - t0) / len(ready)
            for (item, _), item_traces in zip(ready, traces, strict=True):
                results[item.key] = (item_traces[0], seconds)
        except Exception as e:  # noqa: BLE001 - find the sample that broke the batch, keep the others
            log.warning("a batch of %d failed (%s: %s); asking its samples one at a time", len(ready),
                        type(e).__name__, e)
            for item, prompt in ready:
                t1 = time.perf_counter()
                try:
                    results[item.key] = (backend.generate([prompt], params)[0][0], time.perf_counter() - t1)
                except Exception as e1:  # noqa: BLE001
                    results[item.key] = f"sample {item.sample.id!r}: generation failed: {type(e1).__name__}: {e1}"
        timer.model += time.perf_counter() - t0
    records, traces = [], {}
    for item, images in prepared:
        got = images if isinstance(images, str) else results[item.key]
        if isinstance(got, str):
            stage = "image" if isinstance(images, str) else "generate"
            records.append(error_record(item, got, stage))
            log.warning("%s", got)
            continue
        trace, seconds = got
        if trace.meta.get("error"):  # a backend that reports a failed request per sample (OpenAI-compatible)
            msg = f"sample {item.sample.id!r}: generation failed: {trace.meta['error']}"
            records.append(error_record(item, msg, "generate"))
            log.warning("%s", msg)
            continue
        s = item.sample
        records.append(base_record(item) | grade(trace, s.answer, s.answer_type, s.options, cmap, task_of(s), s)
                       | {"seconds": round(seconds, 5), "batch_size": len(ready)}
                       | ({"usage": trace.meta["usage"]} if trace.meta.get("usage") else {}))
        traces[item.key] = trace
    return records, traces
