"""Many processes without a server: ``accelerate launch`` / ``torchrun`` shard eval, probe and tts over processes.

Under a launcher that sets ``WORLD_SIZE`` > 1 (and ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``),
every process loads its own model (on ``cuda:LOCAL_RANK`` when CUDA is present: importing this
module makes that the current CUDA device, so ``--device auto``/``cuda`` land there) and takes
``todo[rank::size]`` of the items not yet done. Each process appends its records to
``results.rank{k}.jsonl`` and its traces to ``traces/rank{k}/``; at the end rank 0 merges them into
``results.jsonl`` and ``traces/`` (in item order) and writes the summary; the other processes
return the same summary without writing anything else.

Resume: rank 0 merges leftover rank files of a killed run (from any number of processes) before
the done keys are read, so a run resumes with any number of processes, one included. The processes
meet through a gloo process group (CPU only, no NCCL), used for barriers and small objects.

With ``WORLD_SIZE`` unset or 1 nothing here is active.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from catts.jobs.rundir import TRACES, dumps, save_traces

RANK_RESULTS = "results.rank{}.jsonl"
RANK_TRACES = "rank{}"
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl$")
TIMEOUT = timedelta(hours=float(os.environ.get("CATTS_SHARD_TIMEOUT_HOURS", "48")))  # slowest rank's lag


def world() -> tuple[int, int]:
    """(rank, size) from the launcher's environment; (0, 1) in a plain process."""
    size = int(os.environ.get("WORLD_SIZE") or 1)
    rank = int(os.environ.get("RANK") or 0)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} WORLD_SIZE={size}: expected 0 <= RANK < WORLD_SIZE")
    return rank, size


def bind_device() -> None:
    """Make ``cuda:LOCAL_RANK`` the current CUDA device of a sharded process (nothing in a plain one)."""
    if world()[1] <= 1:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK") or 0) % torch.cuda.device_count())


class RankWriter:
    """The RunDir ``append``/``flush`` of one rank: ``results.rank{k}.jsonl`` and ``traces/rank{k}/``."""

    def __init__(self, out: str | Path, rank: int):
        self.results_file = Path(out) / RANK_RESULTS.format(rank)
        self.traces_dir = Path(out) / TRACES / RANK_TRACES.format(rank)
        self._writer = ThreadPoolExecutor(1)
        self._pending: list[Future] = []

    def append(self, records: Iterable[dict], traces: dict[str, Any] | None = None) -> None:
        self._pending.append(self._writer.submit(self._write, list(records), traces))
        for f in [f for f in self._pending if f.done()]:
            f.result()
            self._pending.remove(f)

    def _write(self, records: list[dict], traces: dict[str, Any] | None) -> None:
        if traces:  # the trace is on disk before its record
            save_traces(self.traces_dir, traces)
        with self.results_file.open("a") as f:
            f.write("".join(dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def flush(self) -> None:
        while self._pending:
            self._pending.pop(0).result()


def rank_files(out: str | Path) -> list[Path]:
    return sorted((p for p in Path(out).glob("results.rank*.jsonl") if _RANK_FILE.search(p.name)),
                  key=lambda p: int(_RANK_FILE.search(p.name).group(1)))


def remove_rank_files(out: str | Path) -> None:
    for p in rank_files(out):
        p.unlink(missing_ok=True)
    for d in (Path(out) / TRACES).glob("rank*"):
        if d.is_dir():
            shutil.rmtree(d)


def _read_complete(path: Path) -> list[dict]:
    """Records of a rank file; a partial last line (a process killed mid-write) is dropped."""
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.strip() and line.endswith("\n"):
            out.append(json.loads(line))
    return out


def absorb(run, order: Sequence[str] = ()) -> int:
    """Merge every rank file of ``run``'s folder into its results.jsonl and traces (records sorted by
    their key's place in ``order``, unknown keys last); returns how many records came in.

    Traces move first, then records are appended, then the rank file goes: a kill in between
    leaves at worst a record twice (records() keeps the last) or a trace without its record."""
    files = rank_files(run.path)
    traces = Path(run.path) / TRACES
    rank_dirs = sorted(d for d in traces.glob("rank*") if d.is_dir()) if traces.exists() else []
    for d in rank_dirs:
        for src in sorted(d.glob("[0-9]*.npz")):
            nums = [int(p.stem) for p in traces.glob("[0-9]*.npz") if p.stem.isdigit()]
            src.replace(traces / f"{max(nums, default=-1) + 1:05d}.npz")
        shutil.rmtree(d)
    place = {k: i for i, k in enumerate(order)}
    records = [r for p in files for r in _read_complete(p)]
    records.sort(key=lambda r: place.get(r.get("key"), len(place)))  # stable: a retried key keeps its order
    if records:
        run.append(records)
        run.flush()
    for p in files:
        p.unlink()
    return len(records)


class Session:
    """One sharded run: this process's rank, the gloo group, and its writer."""

    def __init__(self, rank: int, size: int):
        import torch.distributed as dist

        self.rank, self.size, self.dist = rank, size, dist
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            dist.init_process_group("gloo", rank=rank, world_size=size, timeout=TIMEOUT)
        self.group = dist.new_group(backend="gloo", timeout=TIMEOUT) if not self.owns_group else None
        self.writer: RankWriter | None = None
        self.barrier()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> list:
        box: list = [None] * self.size
        self.dist.all_gather_object(box, obj, group=self.group)
        return box

    def start(self, run, order: Sequence[str], overwrite: bool, setup=None) -> set:
        """Rank 0 (holding ``run``): drop (``overwrite``) or merge leftover rank files, run ``setup()``
        (e.g. append load errors); then every rank gets the done keys and its writer."""
        done = None
        if self.main:
            remove_rank_files(run.path) if overwrite else absorb(run, order)
            if setup:
                setup()
            done = run.done_keys()
        done = self.share(done)
        return done

    def take(self, todo: Sequence) -> list:
        """This rank's part of the items not yet done."""
        return list(todo[self.rank::self.size])

    def finish(self, run, order: Sequence[str]) -> None:
        """Every rank's records on disk, then rank 0 merges them into ``run``."""
        self.writer.flush()
        self.barrier()
        if self.main:
            absorb(run, order)

    def close(self) -> None:
        if self.writer:
            self.writer._writer.shutdown()
        self.barrier()
        if self.owns_group:
            self.dist.destroy_process_group()


def session(out: str | Path) -> Session | None:
    """A :class:`Session` for a launcher's process (its writer writes in ``out``), or None in a plain one."""
    rank, size = world()
    if size <= 1:
        return None
    s = Session(rank, size)
    s.writer = RankWriter(out, rank)
    return s


bind_device()
