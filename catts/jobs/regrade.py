"""``catts regrade``: re-extract and re-score a finished run from its stored traces, without the model.

Every answer's per-token log-probabilities and top-k are in the run's ``traces/`` shards, so a
change of extraction rules or a new confidence only needs the traces: each record is graded anew
(``catts.jobs.ask.regrade_record``), ``results.jsonl`` is rewritten atomically, and the summary (and,
for a probe, the confidence maps, figures and report) is rebuilt. Records without a stored trace
(errors) are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from catts.jobs.ask import regrade_records
from catts.jobs.rundir import CONFIG, RunDir


def regrade(out: str | Path) -> dict:
    """Regrade the run in ``out``; returns its new summary."""
    out = Path(out)
    cfg_file = out / CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(f"{out} holds no catts run (no {CONFIG})")
    config = json.loads(cfg_file.read_text())
    run = RunDir(out, config)
    records = run.records()
    if config.get("task") == "probe":
        from catts.jobs.probe import regrade_probe

        return regrade_probe(run, records)
    if config.get("task") == "eval":
        from catts.jobs.eval import summarize_eval

        records = regrade_records(records, run.traces())
        run.rewrite(records)
        summary = summarize_eval(records)
        run.write_summary(summary)
        return summary
    raise ValueError(f"{out}: cannot regrade a run of task {config.get('task')!r}")
