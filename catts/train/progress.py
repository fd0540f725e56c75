"""A CDRL run's progress line, on a terminal and off it.

TRL's own output is a tqdm bar (carriage returns: unreadable in a log file) and the raw dict of every logged
metric. ``StepLog`` adds one line per logging step through the ``catts`` logger, as every catts job reports
progress (``catts.jobs.progress``): the step, the reward, accuracy, C, C' and their gap, the unparsed share, the
time per step and an estimate of the time left, e.g.

    cdrl step 40/300: reward 3.62, accuracy 0.61, C 0.774, C' 0.305, C - C' 0.469, unparsed 0.14; 1.4 s/step, about 6 min left
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

log = logging.getLogger("catts")

# (label, logged key, format) of the line's metrics; a key missing from a step's logs is left out.
FIELDS = (("reward", "reward", "{:.2f}"), ("accuracy", "cdrl/accuracy", "{:.2f}"), ("C", "cdrl/confidence", "{:.3f}"),
          ("C'", "cdrl/noisy_confidence", "{:.3f}"), ("C - C'", "cdrl/confidence_gap", "{:.3f}"),
          ("unparsed", "cdrl/unparsed", "{:.2f}"))


def step_line(step: int, max_steps: int, logs: dict, seconds_per_step: float | None) -> str:
    """The progress line of one logging step (see the module)."""
    parts = [f"{label} {fmt.format(logs[key])}" for label, key, fmt in FIELDS if isinstance(logs.get(key), (int, float))]
    line = f"cdrl step {step}/{max_steps}: " + ", ".join(parts)
    if seconds_per_step is not None:
        left = max(max_steps - step, 0) * seconds_per_step
        line += f"; {seconds_per_step:.1f} s/step, about {left / 60:.0f} min left"
    return line


class StepLog(TrainerCallback):
    """Logs ``step_line`` on the main process at each of the trainer's logging steps (the trainer's own
    evaluation and final-summary logs, without a reward, are skipped)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.start: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = (self.clock(), state.global_step)  # a resumed run times only its own steps

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        per_step = None
        if self.start is not None and state.global_step > self.start[1]:
            per_step = (self.clock() - self.start[0]) / (state.global_step - self.start[1])
        log.info("%s", step_line(state.global_step, state.max_steps, logs, per_step))
