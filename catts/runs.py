"""Run folders: per-sample JSONL written as it goes, resume without redoing finished samples, and a
summary JSON with versions, seeds and config."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

RESULTS = "results.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"


def versions() -> dict[str, str]:
    import numpy
    import PIL
    import torch
    import transformers

    import catts

    return {"catts": catts.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "transformers": transformers.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__}


class RunDir:
    """A run folder. ``config`` must match the one a resumed run started with (apart from ``resume_ignore``)."""

    def __init__(self, out: str | Path, config: dict[str, Any], resume_ignore: Iterable[str] = ("limit",)):
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = config
        cfg_file = self.path / CONFIG
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text())
            ignore = set(resume_ignore)
            diff = sorted(k for k in set(old) | set(config) if k not in ignore and old.get(k) != config.get(k))
            if diff:
                raise ValueError(f"{self.path} holds a run with a different config ({', '.join(diff)} differ); "
                                 "use a new --out folder")
        cfg_file.write_text(json.dumps(config, indent=1, sort_keys=True))
        self.results_file = self.path / RESULTS
        self._repair_tail()

    def _repair_tail(self) -> None:
        """A run killed mid-write can leave a partial last line: drop it so the sample is redone."""
        if not self.results_file.exists():
            return
        data = self.results_file.read_bytes()
        if data and not data.endswith(b"\n"):
            self.results_file.write_bytes(data[: data.rfind(b"\n") + 1])

    def records(self) -> list[dict]:
        if not self.results_file.exists():
            return []
        return [json.loads(line) for line in self.results_file.read_text().splitlines() if line.strip()]

    def done_keys(self, key: str = "id") -> set:
        return {r[key] for r in self.records()}

    def append(self, records: Iterable[dict]) -> None:
        with self.results_file.open("a") as f:
            for r in records:
                f.write(json.dumps(r, default=_jsonable) + "\n")
            f.flush()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        full = {**summary, "config": self.config, "versions": versions(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        path = self.path / SUMMARY
        path.write_text(json.dumps(full, indent=1, default=_jsonable))
        return path


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
