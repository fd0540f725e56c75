"""Share of probe time spent outside model calls (degrading, extracting, scoring, metrics, report).

Runs the default embedded probe (or a smaller one with --limit) in a fresh folder, timing every
backend call from outside, and prints the share of wall time spent elsewhere as its last line.
As ``catts probe`` does, the data loads on a thread while the model loads; the clock starts when
the sweep starts (data and model ready) and stops when the summary, figures and report are written.

    python benchmarks/probe_overhead.py [--limit 150] [--out runs/bench_probe]
"""

from __future__ import annotations

import argparse
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from catts.models import load_backend
from catts.jobs.probe import ProbeConfig, load_datasets, run_probe


class TimedBackend:
    """Forwards to a backend and adds up the seconds spent inside it."""

    def __init__(self, backend):
        self.inner, self.seconds, self.name = backend, 0.0, backend.name

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def generate(self, *args, **kwargs):
        return self._timed(self.inner.generate, *args, **kwargs)

    def score(self, *args, **kwargs):
        return self._timed(self.inner.score, *args, **kwargs)

    def next_token_logprobs(self, *args, **kwargs):
        return self._timed(self.inner.next_token_logprobs, *args, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--limit", type=int, default=ProbeConfig.limit)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="runs/bench_probe")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = ProbeConfig(model=args.model, limit=args.limit)
    with ThreadPoolExecutor(1) as pool:
        datasets = pool.submit(load_datasets, cfg)
        backend = TimedBackend(load_backend(args.model, batch_size=args.batch_size))
        datasets = datasets.result()
    t0 = time.perf_counter()
    summary = run_probe(backend, cfg, Path(args.out), datasets=datasets, batch=args.batch_size)
    wall = time.perf_counter() - t0
    n = sum(lv["n"] for lv in summary["levels"])
    print(f"probe of {args.model}: {n} answers over {len(summary['levels'])} levels in {wall:.1f}s "
          f"({backend.seconds:.1f}s in model calls)")
    print(f"overhead: {100 * (wall - backend.seconds) / wall:.1f}%")


if __name__ == "__main__":
    main()
