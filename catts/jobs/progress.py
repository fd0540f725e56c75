"""Progress of long jobs, on a terminal and off it.

Jobs report phases (``phase(name, total)``) and steps (``advance(k)``) to a ``Progress``; the
default one is silent, so the Python API prints nothing unless asked. ``console_progress()`` gives
rich bars when stderr is a terminal, and otherwise (nohup, SLURM, CI) a plain line through the
``catts`` logger at the start and end of every phase and every ``interval`` seconds within it,
so a long job is never silent in a log file.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("catts")


class Progress:
    """Silent progress: the interface every job reports to."""

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        """Start a phase of ``total`` steps (None: unknown), ``done`` of them already finished."""

    def advance(self, k: int = 1) -> None:
        """``k`` more steps of the current phase are finished."""

    def close(self) -> None:
        """The job is over."""

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LogProgress(Progress):
    """One log line per phase start and end, and one every ``interval`` seconds in between: on the steps
    that pass it, and from a heartbeat thread while a long step (one big model call) holds the job."""

    def __init__(self, interval: float = 30.0, clock=time.monotonic, heartbeat: bool | None = None):
        self.interval, self.clock = interval, clock
        self.name, self.total, self.done = "", None, 0
        self.started = self.last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if heartbeat if heartbeat is not None else clock is time.monotonic:
            threading.Thread(target=self._beat, daemon=True, name="catts-progress").start()

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        with self._lock:
            self._finish()
            self.name, self.total, self.done = name, total, done
            self.started = self.last = self.clock()
            log.info("%s: started%s", name, f" ({done}/{total} already done)" if done else
                     (f" ({total} steps)" if total else ""))

    def advance(self, k: int = 1) -> None:
        with self._lock:
            self.done += k
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                log.info("%s", self.line(now))

    def _beat(self) -> None:
        while not self._stop.wait(self.interval / 4):
            with self._lock:
                now = self.clock()
                if self.name and now - self.last >= self.interval:
                    self.last = now
                    log.info("%s (still running)", self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        if not self.total:
            return f"{self.name}: {self.done} done, {elapsed:.0f}s"
        share = self.done / self.total
        eta = f", about {elapsed / share * (1 - share):.0f}s left" if 0 < share < 1 else ""
        return f"{self.name}: {self.done}/{self.total} ({100 * share:.0f}%), {elapsed:.0f}s{eta}"

    def _finish(self) -> None:
        if self.name:
            log.info("%s: finished in %.1fs", self.name, self.clock() - self.started)
            self.name = ""

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._finish()


class RichProgress(Progress):
    """A rich bar per phase on the terminal (stderr)."""

    def __init__(self, console):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         TimeRemainingColumn(), console=console)
        self.bars.start()
        self.task = None

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        if self.task is not None:
            self.bars.update(self.task, total=self.bars.tasks[-1].completed or 1,
                             completed=self.bars.tasks[-1].completed or 1)
        self.task = self.bars.add_task(name, total=total, completed=done)

    def advance(self, k: int = 1) -> None:
        if self.task is not None:
            self.bars.advance(self.task, k)

    def close(self) -> None:
        if self.task is not None and self.bars.tasks[-1].total:
            self.bars.update(self.task, completed=self.bars.tasks[-1].total)
        self.bars.stop()


def setup_logging(level: int = logging.INFO) -> None:
    """Levelled logging for the ``catts`` logger on the current stderr (rich on a terminal)."""
    for old in [h for h in log.handlers if getattr(h, "_catts", False)]:
        log.removeHandler(old)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler._catts = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def console_progress(console=None, interval: float = 30.0) -> Progress:
    """Bars on a terminal, timed log lines elsewhere."""
    if sys.stderr.isatty():
        from rich.console import Console

        return RichProgress(console or Console(stderr=True))
    return LogProgress(interval)
