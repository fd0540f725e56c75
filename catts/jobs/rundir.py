"""Run folders: per-sample JSONL written as it goes, per-token traces beside it, resume without
redoing finished samples, and a strict-JSON summary with versions, seeds and config.

Layout of a run folder:

- ``config.json``: everything that changes an answer (model, data, dtype, device type, pixel
  guard, seeds, ...). A resumed run must match it, apart from ``resume_ignore`` (e.g. ``limit``).
- ``results.jsonl``: one record per input row, appended as answers arrive. A row that could not be
  loaded or whose image could not be read is a record too, with its ``error``.
- ``traces/NNNNN.npz``: per-token log-probabilities and top-k of every answer, keyed by record key,
  one shard per append, so a finished run can be re-graded and re-scored without the model
  (``catts regrade``). Token pieces are stored once per shard in a table of distinct strings.
- ``summary.json``: strict JSON (``NaN`` and infinities are written as ``null``: not defined).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np

RESULTS = "results.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
TRACES = "traces"
OUTPUTS = ("summary.md", "levels.csv", "figure1_*.png", "reliability_*.png", "tts_scaling.png",
           "report.html")  # the report files of a run


def versions() -> dict[str, str]:
    import PIL
    import torch
    import transformers

    import catts

    return {"catts": catts.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__}


def strict(x: Any) -> Any:
    """``x`` with numpy scalars and arrays made plain and every non-finite float replaced by None."""
    if isinstance(x, dict):
        return {str(k): strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict(v) for v in x]
    if isinstance(x, np.ndarray):
        return strict(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(x: Any, **kwargs) -> str:
    """Strict JSON: never a bare NaN token (see :func:`strict`)."""
    return json.dumps(strict(x), allow_nan=False, **kwargs)


def config_diff(old: dict, new: dict, ignore: Iterable[str] = ()) -> list[str]:
    skip = set(ignore)
    return sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))


def check_resumable(out: str | Path, config: dict, resume_ignore: Iterable[str] = ("limit",)) -> None:
    """Raise ValueError if ``out`` holds a run with another config (checked before any work starts)."""
    cfg_file = Path(out) / CONFIG
    if cfg_file.exists():
        diff = config_diff(json.loads(cfg_file.read_text()), strict(config), resume_ignore)
        if diff:
            raise ValueError(f"{out} holds a run with a different config ({', '.join(diff)} differ); "
                             "use another --out folder, or --overwrite to start it afresh")


class RunDir:
    """A run folder. ``config`` must match the one a resumed run started with (apart from ``resume_ignore``).

    ``overwrite`` removes an existing run in ``out`` first. The folder is created here, so build a
    RunDir only once every argument has been validated.
    """

    def __init__(self, out: str | Path, config: dict[str, Any], resume_ignore: Iterable[str] = ("limit",),
                 overwrite: bool = False):
        self.path = Path(out)
        if overwrite and self.path.exists():  # only what catts writes: a user's own files stay
            for name in (CONFIG, RESULTS, SUMMARY, TRACES, *OUTPUTS):
                for p in self.path.glob(name):
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        check_resumable(self.path, config, resume_ignore)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = strict(config)
        (self.path / CONFIG).write_text(dumps(self.config, indent=1, sort_keys=True))
        self.results_file = self.path / RESULTS
        self.traces_dir = self.path / TRACES
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._repair_tail()

    def _repair_tail(self) -> None:
        """A run killed mid-write can leave a partial last line: drop it so the sample is redone."""
        if not self.results_file.exists():
            return
        data = self.results_file.read_bytes()
        if data and not data.endswith(b"\n"):
            self.results_file.write_bytes(data[: data.rfind(b"\n") + 1])

    def records(self) -> list[dict]:
        """Every record, the last one of a key replacing earlier ones in place (a retried sample)."""
        self.flush()
        if not self.results_file.exists():
            return []
        latest: dict = {}
        for line in self.results_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                latest[r.get("key", len(latest))] = r
        return list(latest.values())

    def done_keys(self, key: str = "key") -> set:
        """Keys a resumed run skips: all but those whose generation failed (a server down, a timeout), which
        are asked again."""
        return {r[key] for r in self.records() if r.get("stage") != "generate"}

    def append(self, records: Iterable[dict], traces: dict[str, Any] | None = None) -> None:
        """Append records; their traces (record key -> Trace) go to a new shard first, so a record
        on disk always has its trace on disk. Writing happens on a writer thread (compressing the
        traces costs about as much as grading); ``flush()`` waits for it, ``records()`` flushes."""
        records = list(records)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1)
        self._pending.append(self._writer.submit(self._write, records, traces))
        done = [f for f in self._pending if f.done()]
        for f in done:
            f.result()  # raise a writer error here, not later
            self._pending.remove(f)

    def _write(self, records: list[dict], traces: dict[str, Any] | None) -> None:
        if traces:
            save_traces(self.traces_dir, traces)
        lines = "".join(dumps(r) + "\n" for r in records)
        with self.results_file.open("a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def flush(self) -> None:
        """Wait until everything appended is on disk."""
        while self._pending:
            self._pending.pop(0).result()

    def rewrite(self, records: list[dict]) -> None:
        """Replace results.jsonl atomically (used by regrade)."""
        self.flush()
        tmp = self.results_file.with_suffix(".tmp")
        tmp.write_text("".join(dumps(r) + "\n" for r in records))
        tmp.replace(self.results_file)

    def traces(self) -> dict[str, Any]:
        self.flush()
        return load_traces(self.traces_dir)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        self.flush()
        full = {**summary, "config": self.config, "versions": versions(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        path = self.path / SUMMARY
        path.write_text(dumps(full, indent=1))
        return path


def _id_pieces(ts: list, ids: np.ndarray) -> list[str]:
    """The text piece of each distinct top-k token id in ``ids``, read from the traces themselves."""
    from catts.models.backend import TopPieces

    lazy = next((t.top_tokens for t in ts if isinstance(t.top_tokens, TopPieces)), None)
    if lazy is not None:
        return [lazy.piece(int(i)) for i in ids]
    table: dict[int, str] = {}
    for t in ts:
        for row_ids, row in zip(t.top_ids.tolist(), t.top_tokens):
            table.update(zip(row_ids, row))
    return [table.get(int(i), "") for i in ids]


def save_traces(folder: Path, traces: dict[str, Any]) -> Path:
    """One compressed ``.npz`` shard holding every trace of ``traces`` (record key -> Trace).

    Top-k alternatives are stored as ids with one table of the distinct ids' text pieces; chosen
    tokens' pieces (which depend on context) are stored per token through a table of distinct strings.
    """
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(traces)
    ts = [traces[k] for k in keys]
    k = max((t.top_logprobs.shape[1] for t in ts if t.top_logprobs.ndim == 2 and t.num_tokens), default=1)

    def top(t, name, dtype):
        a = getattr(t, name)
        return a.astype(dtype) if a.ndim == 2 and a.shape[1] == k else np.zeros((t.num_tokens, k), dtype)

    top_ids = np.concatenate([top(t, "top_ids", np.int64) for t in ts] or [np.zeros((0, k), np.int64)])
    piece_ids = np.unique(top_ids)
    token_table: dict[str, int] = {}
    token_piece = np.array([token_table.setdefault(p, len(token_table)) for t in ts for p in t.tokens], np.int32)
    arrays = {
        "keys": np.array(keys, dtype=str),
        "offsets": np.cumsum([0] + [t.num_tokens for t in ts]).astype(np.int64),
        "token_ids": np.concatenate([np.asarray(t.token_ids, np.int64) for t in ts] or [np.zeros(0, np.int64)]),
        "logprobs": np.concatenate([np.asarray(t.logprobs, np.float32) for t in ts] or [np.zeros(0, np.float32)]),
        "top_logprobs": np.concatenate([top(t, "top_logprobs", np.float32) for t in ts] or [np.zeros((0, k))]),
        "top_ids": top_ids,
        "piece_ids": piece_ids,
        "piece_text": np.array(_id_pieces(ts, piece_ids) or [""], dtype=str),
        "token_piece": token_piece,
        "token_text": np.array(list(token_table) or [""], dtype=str),
        "finish": np.array([t.finish_reason for t in ts], dtype=str),
        "source": np.array([t.logprob_source for t in ts], dtype=str),
        "text": np.array([t.text for t in ts], dtype=str),
    }
    n = len(list(folder.glob("*.npz")))
    path = folder / f"{n:05d}.npz"
    while path.exists():
        n += 1
        path = folder / f"{n:05d}.npz"
    tmp = folder / f".{path.stem}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_traces(folder: Path) -> dict[str, Any]:
    """Every stored trace by record key (a later shard wins: a redone sample replaces its old trace)."""
    from catts.models.backend import TopPieces, Trace

    out: dict[str, Trace] = {}
    for path in sorted(Path(folder).glob("[0-9]*.npz")):
        with np.load(path) as z:
            a = {name: z[name] for name in z.files}
        table = dict(zip(a["piece_ids"].tolist(), a["piece_text"].tolist()))
        token_text = a["token_text"].tolist()
        off = a["offsets"]
        for i, key in enumerate(a["keys"].tolist()):
            lo, hi = int(off[i]), int(off[i + 1])
            out[key] = Trace(text=str(a["text"][i]), token_ids=a["token_ids"][lo:hi].tolist(),
                             logprobs=a["logprobs"][lo:hi], top_logprobs=a["top_logprobs"][lo:hi],
                             top_ids=a["top_ids"][lo:hi], finish_reason=str(a["finish"][i]),
                             tokens=[token_text[j] for j in a["token_piece"][lo:hi]],
                             top_tokens=TopPieces(a["top_ids"][lo:hi], table.__getitem__),
                             logprob_source=str(a["source"][i]))
    return out
