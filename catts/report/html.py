"""``catts report``: one self-contained HTML page of a finished run folder (probe, tts or eval).

The page (``RUN_DIR/report.html``) needs nothing beside it: figures are inlined as base64 PNG
``<img>`` tags with alt text, tables are ``<table>``s with a ``<caption>``, the style sheet is inline,
and there is no JavaScript and no external resource. Every piece of text from the run (config values,
dataset names, error messages) is escaped, and config entries that look like credentials are left out.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from catts.jobs.rundir import CONFIG, SUMMARY

REPORT = "report.html"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SECRET_NAME = re.compile(r"key|secret|passw|credential|auth|cookie", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(sk-|hf_|ghp_|gho_|xox[abp]-|AKIA)[A-Za-z0-9_\-]{6,}")
_URL_USERINFO = re.compile(r"(//)[^/@\s]+@")
_NUMBER = re.compile(r"^([+-]?\d+(\.\d+)?|n/a)$")

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}caption{font-weight:600;text-align:left;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.num{text-align:right}
thead th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.note{color:#666}"""


# ---- small helpers ----------------------------------------------------------------------------------
def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "n/a" if x is None else str(x)
    return "n/a" if not math.isfinite(x) else (str(x) if isinstance(x, int) else f"{x:.{digits}f}")


def pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) or not math.isfinite(x) else f"{100 * x:.1f}"


def dig(d: Any, *path: str) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def table(caption: str, head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A ``<table>`` with a caption, a header row and one row per entry (cells escaped)."""
    out = [f"<table><caption>{esc(caption)}</caption><thead><tr>",
           *(f'<th scope="col">{esc(h)}</th>' for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if _NUMBER.match(str(c)) else f"<td>{esc(c)}</td>"
                                    for c in row) + "</tr>")
    return "".join(out) + "</tbody></table>"


def figure(path: Path, alt: str) -> str:
    """A PNG file inlined as a data URL; a note when it is missing or not a PNG."""
    data = path.read_bytes() if path.is_file() else b""
    if not data.startswith(PNG_MAGIC):
        return f'<p class="note">Figure {esc(path.name)} is missing from the run folder.</p>'
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{src}" alt="{esc(alt)}"><figcaption>{esc(alt)}</figcaption></figure>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def slug(s: str) -> str:  # the figure file names' slug (catts.report.figures.slug, without matplotlib)
    return "".join(c if c.isalnum() else "_" for c in s)


def public(x: Any) -> Any:
    """``x`` without entries whose name looks like a credential, and with key-like strings redacted."""
    if isinstance(x, dict):
        return {k: public(v) for k, v in x.items() if not _SECRET_NAME.search(str(k))
                and not ("token" in str(k).lower() and isinstance(v, str))}  # token budgets (ints) stay
    if isinstance(x, list):
        return [public(v) for v in x]
    if isinstance(x, str):
        return _URL_USERINFO.sub(r"\1", _SECRET_VALUE.sub("[redacted]", x))
    return x


def plain(v: Any) -> str:
    if isinstance(v, list) and all(not isinstance(i, (dict, list)) for i in v):
        return ", ".join(str(i) for i in v)
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


# ---- the three kinds of run -------------------------------------------------------------------------
LEVEL_HEAD = ("kind", "level", "n", "unparsed", "acc (all)", "acc (parsed)", "answer prob (parsed)",
              "ECE (parsed)", "ECE (all)", "AUROC (parsed)", "AUROC of C (parsed)")


def probe_body(run: Path, s: dict) -> list[str]:
    from catts.report.finding import finding_text

    out = [para(f"Calibration metrics use {s.get('n_bins', 15)} equal-width bins. \"parsed\": over answers that "
                "could be read; \"all\": every answer, an unparsed one counted wrong at confidence 0.")]
    levels = s["levels"]
    for data in dict.fromkeys(lv["data"] for lv in levels):
        mine = [lv for lv in levels if lv["data"] == data]
        out.append(f"<h2>{esc(data)}</h2>")
        f = (s.get("finding") or {}).get(data)
        if f:
            out.append("<h3>Finding</h3>")
            out += [para(line) for line in finding_text(data, f, (s.get("confidence_maps") or {}).get(data)) if line]
        else:
            out.append(para("No finding: it needs at least two diffusion levels with answers."))
        rows = [[lv["kind"], lv["level"], lv.get("n", 0), num(lv.get("unparsed_rate")), num(lv.get("accuracy")),
                 num(lv.get("accuracy_parsed")), num(dig(lv, "confidence", "answer_prob", "parsed")),
                 num(dig(lv, "calibration", "answer_prob", "parsed", "ece")),
                 num(dig(lv, "calibration", "answer_prob", "all", "ece")),
                 num(dig(lv, "calibration", "answer_prob", "parsed", "auroc")),
                 num(dig(lv, "ranking", "mean", "parsed", "auroc"))] for lv in mine]
        out.append(table(f"{data}: accuracy and confidence per level", LEVEL_HEAD, rows))
        for kind in dict.fromkeys(lv["kind"] for lv in mine if lv["kind"] != "none" and lv.get("n")):
            out.append(f"<h3>{esc(kind)}</h3>")
            out.append(figure(run / f"figure1_{slug(data)}_{kind}.png",
                              f"Figure 1, {data}, {kind}: accuracy and mean confidence against level"))
            out.append(figure(run / f"reliability_{slug(data)}_{kind}.png",
                              f"Reliability of the answer probability per {kind} level, {data}"))
    t = s.get("timing") or {}
    out.append(para(f"{s.get('n_records', 'n/a')} records, {len(s.get('errors') or [])} errors; probe time "
                    f"{num(t.get('total_seconds'), 1)} s, of which {num(t.get('model_seconds'), 1)} s in model calls."))
    return out + errors_section(s)


def _stats_rows(entries: Iterable[tuple[str, dict]]) -> list[list[str]]:
    return [[name, pct(v.get("accuracy")), num(v.get("ece")), num(v.get("generated_tokens_per_question"), 1),
             num(v.get("model_calls_per_question"), 2), v.get("n", "n/a")] for name, v in entries]


STATS_HEAD = ("accuracy (%)", "ECE", "generated tokens / q", "model calls / q", "n")


def tts_body(run: Path, s: dict) -> list[str]:
    cfg = s.get("config") or {}
    out = [para(f"{s['n_items']} items ({plain(cfg.get('data', ''))} x {plain(cfg.get('degrade', ''))}), "
                f"{s.get('n_errors', 0)} errors, N = {cfg.get('n', 'n/a')}. Accuracy over all items (unparsed = "
                "wrong); ECE of each method's own confidence."),
           table("Methods", ("method", *STATS_HEAD), _stats_rows((m["name"], m) for m in s["methods"]))]
    diffs = [(label, s.get(k)) for label, k in (("CA-TTS - majority", "ca_tts_vs_majority"),
                                                ("majority - pass@1", "majority_vs_pass1"),
                                                ("gated - full CA-TTS", "gated_vs_ca_tts"))]
    out.append(table("Paired differences in accuracy (points, bootstrap 95% CI over questions)",
                     ("comparison", "difference", "CI low", "CI high"),
                     [[label, *(f"{100 * d[k]:+.1f}" for k in ("diff", "ci_low", "ci_high"))] for label, d in diffs
                      if d]))
    if s.get("gated_token_ratio") is not None:
        out.append(para(f"Gated CA-TTS uses {100 * s['gated_token_ratio']:.0f}% of full CA-TTS's generated tokens."))
    for caption, key, first in (("Ablations (every module subset, measured)", "ablations", "variant"),
                                ("Internal-vote weight", "weights", "weight"),
                                ("Gate curve (threshold of the gated CA-TTS)", "gate_curve", "threshold")):
        if s.get(key):
            out.append(table(caption, (first, *STATS_HEAD), _stats_rows(s[key].items())))
    sc = s.get("scaling") or {}
    if sc.get("n"):
        out.append("<h2>Scaling</h2>")
        rows = [[m, *(pct(a) for a in row["accuracy"]), pct(row.get("slope_per_doubling"))]
                for m, row in sc["methods"].items()]
        out.append(table("Scaling: accuracy (%) per N", ("method", *(f"N={n}" for n in sc["n"]),
                                                         "slope / doubling (points)"), rows))
    if s.get("by_level"):
        names = list(dict.fromkeys(k for v in s["by_level"].values() for k in v))
        out.append(table("Accuracy (%) per dataset and level", ("data | level", *names),
                         [[g, *(pct(v.get(n)) for n in names)] for g, v in s["by_level"].items()]))
    out.append(figure(run / "tts_scaling.png", "Accuracy against N samples, and the gate's accuracy against "
                                              "generated tokens per question"))
    mods = s.get("modules") or {}
    out.append("<h2>Modules</h2>")
    out.append(table("Module statistics per expert", ("expert", "planner parsed (%)", "planner orders",
                                                      "critique verdicts", "reflection changed answer (%)",
                                                      "reflection accuracy (%)", "generative voter failed (%)"),
                     [[e, pct(m.get("planner_parsed")), plain(m.get("planner_orders")),
                       plain(m.get("critique_verdicts")), pct(m.get("reflection_changed_answer")),
                       pct(m.get("reflection_accuracy")), pct(m.get("generative_voter_failed"))]
                      for e, m in (mods.get("experts") or {}).items()]))
    out.append(table("Module statistics over all questions", ("statistic", "value"),
                     [["self-check accuracy (%)", pct(mods.get("self_check_accuracy"))],
                      ["self-check modes", plain(mods.get("self_check_modes"))],
                      ["distinct answers per question", num(mods.get("distinct_answers_per_question"), 2)],
                      ["oracle@N (%)", pct(mods.get("oracle_at_n"))],
                      ["module errors", plain(mods.get("module_errors"))]]))
    t = s.get("timing") or {}
    out.append(para(f"Run time {num(t.get('seconds'), 1)} s; model seconds per module: "
                    f"{plain(t.get('model_seconds', {}))}."))
    return out + errors_section(s)


def eval_body(run: Path, s: dict) -> list[str]:
    ci = (s.get("ci95") or {}).get("accuracy")
    head = [["input rows", s.get("n_input_rows", "n/a")], ["answered", s["n"]], ["errors", s.get("n_errors", 0)],
            ["parsed", s.get("n_parsed", "n/a")],
            ["accuracy (all answers)", num(s["accuracy"]) + (f" (95% CI {num(ci[0])} to {num(ci[1])})" if ci else "")],
            ["accuracy (parsed answers)", num(s.get("accuracy_parsed"))],
            ["unparsed rate", num(s.get("unparsed_rate"))],
            ["mean tokens", num(s.get("mean_tokens"), 1)]]
    for scope in ("all", "parsed"):
        cal = dig(s, "calibration", "answer_prob", scope) or {}
        head += [[f"answer probability ECE ({scope})", num(cal.get("ece"))],
                 [f"answer probability AUROC ({scope})", num(cal.get("auroc"))]]
    out = [table("Headline numbers", ("metric", "value"), head)]
    per = s.get("per_question_type") or {}
    out.append(table("Accuracy per question type", ("question type", "accuracy", "n"),
                     [[k, num(v.get("accuracy")), v.get("n")] for k, v in per.items()]))
    t = s.get("timing") or {}
    out.append(para(f"Generation {num(s.get('generation_seconds'), 1)} s; wall time "
                    f"{num(t.get('wall_seconds_this_session'), 1)} s in the last session."))
    return out + errors_section(s)


def errors_section(s: dict, shown: int = 50) -> list[str]:
    errs = s.get("errors") or []
    out = ["<h2>Errors</h2>", para(f"{len(errs)} errors (rows that could not be loaded or answered, module failures)"
                                    + (f"; the first {shown} are listed, all are in summary.json." if len(errs) > shown
                                       else "."))]
    if errs:
        out.append(table("Errors", ("key", "stage", "error"),
                         [[e.get("key", ""), e.get("stage", ""), e.get("error", "")] for e in errs[:shown]]))
    return out


BODIES: dict[str, Callable[[Path, dict], list[str]]] = {"probe": probe_body, "tts": tts_body, "eval": eval_body}


# ---- the page ---------------------------------------------------------------------------------------
def _read_json(path: Path, run: Path, what: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{run}: no {path.name}; {what}")
    try:
        x = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{run}: {path.name} could not be read ({e})") from None
    if not isinstance(x, dict):
        raise ValueError(f"{run}: {path.name} is not a JSON object")
    return x


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` for a finished probe, tts or eval run and return its path.

    A folder that is no run, or a run without its summary (unfinished or partial), is a ValueError
    naming the folder.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run folder")
    config = _read_json(run / CONFIG, run, "not a catts run folder")
    summary = _read_json(run / SUMMARY, run, "the run is unfinished or partial (run it again to finish it, then "
                                             "report)")
    task = config.get("task")
    if task not in BODIES:
        raise ValueError(f"{run}: a {task!r} run; reports exist for {', '.join(BODIES)} runs")
    try:
        body = BODIES[task](run, summary)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{run}: summary.json is incomplete for a {task} run ({type(e).__name__}: {e})") from None
    shown = public({k: v for k, v in config.items() if k != "task"})
    title = f"catts {task} report: {run.resolve().name}"
    page = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
            para(f"Model {plain(public(config.get('model', 'n/a')))}, data {plain(public(config.get('data', 'n/a')))}; "
                 f"finished {summary.get('finished', 'n/a')}."),
            table("Run configuration", ("setting", "value"), [[k, plain(v)] for k, v in sorted(shown.items())]),
            table("Versions", ("package", "version"),
                  [[k, plain(v)] for k, v in public(summary.get("versions") or {}).items()]),
            *body, "</body></html>"]
    path = run / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(page) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
