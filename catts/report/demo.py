"""The demo's one HTML page (``catts demo``): the headline tables, then each step's own report body.

Built from the demo folder's ``summary.json`` and its four run folders with the helpers of
``catts.report.html``: one self-contained page, figures inlined, no script, no external resource.
"""

from __future__ import annotations

import json
from pathlib import Path

from catts.report.html import REPORT, STYLE, esc, num, para, probe_body, table, tts_body

STEP_TITLES = {"probe-base": "Probe of the base model", "probe-cdrl": "Probe of the CDRL model",
               "tts-base": "Test-time scaling, base model as sampler",
               "tts-cdrl": "Test-time scaling, CDRL model as sampler"}


def headline_body(head: dict, trained: str) -> list[str]:
    from catts.jobs.demo import PROBE_COLUMNS, probe_rows
    from catts.report.finding import CONFIDENCE_WORDS, FINDING_CONFIDENCES

    out = ["<h2>Headline</h2>",
           para("Probe over parsed answers: the bluntness ratio is the drop of the mean confidence from clean to "
                "diffusion t = 999 divided by the accuracy drop over the same answers (near 0: confidence ignores "
                "what the model can see); AUROC and ECE at t = 856 and 999. Accuracy counts every answer.")]
    for name in sorted(FINDING_CONFIDENCES, key=lambda n: n != trained):
        what = "the confidence CDRL trains" if name == trained else "beside it"
        out.append(table(f"Base against CDRL: {CONFIDENCE_WORDS[name]} ({what})", ("data", "model", *PROBE_COLUMNS),
                         [[*row[:2], *(num(x) for x in row[2:])] for row in probe_rows(head, name)]))
    out.append(table("The paper's ablation: accuracy over all questions and levels of the tts runs",
                     ("setting", "accuracy", "points over base pass@1"),
                     [[name, num(acc), f"{gain:+.1f}"] for name, acc, gain in head["ablation"]]))
    names = list(head["tts"]["base"])
    out.append(table("Every method, base and CDRL sampler (same questions, levels and expert)",
                     ("method", "sampler: base", "sampler: CDRL"),
                     [[n, num(head["tts"]["base"][n]), num(head["tts"]["cdrl"].get(n))] for n in names]))
    return out


def build_demo_report(folder: str | Path) -> Path:
    """Write ``folder/report.html`` for a finished demo folder and return its path."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    body = headline_body(summary["headline"], (summary.get("config") or {}).get("confidence", "trace_prob"))
    for step in summary["steps"]:
        run = folder / step
        s = json.loads((run / "summary.json").read_text())
        body.append(f'<h1 id="{esc(step)}">{esc(STEP_TITLES.get(step, step))}</h1>')
        body += (probe_body if step.startswith("probe") else tts_body)(run, s)
    cfg = summary.get("config") or {}
    title = "catts demo: perceptual bluntness, CDRL and CA-TTS on the embedded models"
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
            para(f"Base {cfg.get('base')}, CDRL {cfg.get('cdrl')}, expert {cfg.get('expert')}; data "
                 f"{', '.join(cfg.get('data', []))}; finished {summary.get('finished', 'n/a')} in "
                 f"{num(summary.get('seconds'), 0)} s. Each step's run folder holds its records and its own "
                 "report."),
            *body, "</body></html>"]
    path = folder / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(page) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
