"""The paper's four benchmarks, read from the files users download, each with its own answer rules.

    from catts.data.benchmarks import get_task
    task = get_task("mathvista")
    errors = []
    samples = task.load("MathVista/data", errors)    # HF parquet folder/file, MathVista_MINI.tsv, testmini.json
    text = task.prompt(samples[0])                   # the benchmark's question, options and answer format
    ext, ok = task.score(model_output, samples[0])   # extract + match by the benchmark's rules
    table = accuracy_by(task, samples, correct)      # per sub-split (question_type, answer_type, ...)

``load_data("mathvista:PATH")`` (``catts.data``) gives the same samples. See
``docs/benchmarks_data.md`` for the layouts, answer rules and sub-splits of each benchmark.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from catts.data.benchmarks.base import BenchmarkTask, option_lines
from catts.data.benchmarks.mathvision import MathVision
from catts.data.benchmarks.mathvista import MathVista
from catts.data.benchmarks.mmmu import MMMU
from catts.data.benchmarks.mmstar import MMStar
from catts.data.image import DataError
from catts.data.sample import Sample

BENCHMARKS = ("mathvista", "mathvision", "mmmu", "mmstar")
_CLASSES = {"mathvista": MathVista, "mathvision": MathVision, "mmmu": MMMU, "mmstar": MMStar}

__all__ = ["BENCHMARKS", "BenchmarkTask", "MMMU", "MMStar", "MathVision", "MathVista", "accuracy_by", "get_task",
           "load_benchmark", "option_lines", "task_of"]


def get_task(name: str) -> BenchmarkTask:
    """The task of a benchmark by name (MMMU with its default split, ``validation``)."""
    try:
        return _CLASSES[name.lower()]()
    except KeyError:
        raise DataError(f"no benchmark {name!r}; benchmarks: {', '.join(BENCHMARKS)}") from None


def load_benchmark(name: str, path, errors: list[dict] | None = None) -> list[Sample]:
    return get_task(name).load(path, errors)


def task_of(sample: Sample) -> BenchmarkTask | None:
    """The task that loaded ``sample`` (from ``metadata["benchmark"]``), None for other data."""
    name = sample.metadata.get("benchmark")
    return get_task(name) if name in _CLASSES else None


def accuracy_by(task: BenchmarkTask, samples: Sequence[Sample], correct: Mapping[str, bool] | Sequence[bool],
                axis: str | None = None) -> dict[str, dict]:
    """Accuracy per value of one sub-split axis: ``{value: {"n", "correct", "accuracy"}}``, values
    sorted. ``correct`` is keyed by sample id, or a sequence aligned with ``samples``; a sample with
    no result counts as wrong."""
    if not isinstance(correct, Mapping):
        if len(correct) != len(samples):
            raise ValueError(f"{len(correct)} results for {len(samples)} samples")
        correct = {s.id: bool(c) for s, c in zip(samples, correct)}
    table: dict[str, dict] = {}
    for s in samples:
        row = table.setdefault(task.subsplit(s, axis), {"n": 0, "correct": 0})
        row["n"] += 1
        row["correct"] += int(bool(correct.get(s.id, False)))
    for row in table.values():
        row["accuracy"] = row["correct"] / row["n"]
    return dict(sorted(table.items()))
