"""``catts report``: one self-contained HTML page per run folder (probe, tts, eval).

The pages are built from small real runs made here, parsed with ``html.parser`` (everywhere), and
loaded in a real headless Chromium (skipped, with the reason, where no chromium binary is found):
its DOM dump must hold the figures as data-URL PNGs and the tables with their captions and rows, and
a screenshot must show the figures drawn.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from catts.cli import app
from catts.report.html import PNG_MAGIC, build_report

runner = CliRunner()
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")


class Page(HTMLParser):
    """What a report page holds: images (src, alt), tables by caption (header, rows), forbidden tags, text."""

    FORBIDDEN = ("script", "link", "iframe", "object", "embed", "base")

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.imgs: list[tuple[str, str | None]] = []
        self.tables: dict[str, dict] = {}
        self.forbidden: list[str] = []
        self.text: list[str] = []
        self._table = self._row = self._cell = self._caption = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append((a.get("src") or "", a.get("alt")))
        elif tag in self.FORBIDDEN:
            self.forbidden.append(tag)
        elif tag == "table":
            self._table = {"head": [], "rows": []}
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        for v in a.values():  # no resource from outside the page
            assert not (v or "").startswith(("http:", "https:", "//")), (tag, v)

    def handle_endtag(self, tag):
        if tag == "caption":
            self._table["caption"] = "".join(self._caption).strip()
            self._caption = None
        elif tag in ("td", "th"):
            self._row.append(("".join(self._cell).strip(), tag))
            self._cell = None
        elif tag == "tr":
            cells = [c for c, _ in self._row]
            if all(t == "th" for _, t in self._row):
                self._table["head"] = cells
            else:
                self._table["rows"].append(cells)
        elif tag == "table":
            self.tables[self._table["caption"]] = self._table

    def handle_data(self, data):
        self.text.append(data)
        for part in (self._cell, self._caption):
            if part is not None:
                part.append(data)

    def first_column(self, caption: str) -> list[str]:
        return [r[0] for r in self.tables[caption]["rows"]]


def pngs(page: Page) -> list[Image.Image]:
    """Every image of the page, each a data URL that decodes as a PNG, with alt text."""
    out = []
    for src, alt in page.imgs:
        assert src.startswith("data:image/png;base64,") and alt, (src[:40], alt)
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC)
        im = Image.open(io.BytesIO(data))
        im.load()
        assert im.width > 50 and im.height > 50
        out.append(im)
    return out


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


# ---- small real runs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    r = runner.invoke(app, ["probe", "--limit", "4", "--map-limit", "4", "--degrade", "diffusion:0,999",
                            "--data", "shapes:test", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def tts_run(tmp_path_factory, tiny_backend, shapes_test):
    from catts.jobs.probe import Dataset
    from catts.jobs.tts import TTSConfig, run_tts
    from catts.models import load_backend

    out = tmp_path_factory.mktemp("tts")
    cfg = TTSConfig(data=["shapes:test"], limit=2, n=2, degrade=["diffusion:0,856"], scaling=[1, 2])
    run_tts(tiny_backend, {"expert": load_backend("tiny-expert"), "base": tiny_backend}, cfg, out,
            [Dataset("shapes:test", shapes_test[:2])])
    return out


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, tiny_backend, shapes_test):
    from catts.jobs.eval import evaluate

    out = tmp_path_factory.mktemp("eval")
    evaluate(tiny_backend, shapes_test[:4], out, config={"data": "shapes:test", "limit": 4},
             load_errors=[{"line": 7, "id": "bad", "source": "x.jsonl", "error": "row 7: <b>no image</b>"}])
    return out


# ---- what each page holds (html.parser, runs everywhere) --------------------------------------------------
def check_probe(page: Page) -> None:
    assert len(pngs(page)) == 2  # Figure 1 and the reliability grid of the one degradation kind
    assert {"Run configuration", "Versions", "shapes:test: accuracy and confidence per level"} <= set(page.tables)
    levels = page.tables["shapes:test: accuracy and confidence per level"]
    assert [r[:3] for r in levels["rows"]] == [["diffusion", "0", "4"], ["diffusion", "999", "4"]]
    assert levels["head"][:2] == ["kind", "level"]
    assert "bluntness ratio" in "".join(page.text)


def check_tts(page: Page) -> None:
    assert len(pngs(page)) == 1  # the scaling plot
    methods = page.first_column("Methods")
    assert {"pass@1", "majority", "ca-tts", "ca-tts-gated"} <= set(methods)
    assert page.tables["Methods"]["head"] == ["method", "accuracy (%)", "ECE", "generated tokens / q",
                                              "model calls / q", "n"]
    assert all(r[-1] == "4" for r in page.tables["Methods"]["rows"])  # 2 questions x 2 levels
    assert "CA-TTS - majority" in page.first_column(
        "Paired differences in accuracy (points, bootstrap 95% CI over questions)")
    assert page.tables["Scaling: accuracy (%) per N"]["head"][1:3] == ["N=1", "N=2"]
    assert "ca-tts" in page.first_column("Scaling: accuracy (%) per N")
    assert "0.9" in page.first_column("Gate curve (threshold of the gated CA-TTS)")
    assert "sc + voter + reflection + self-check" in page.first_column("Ablations (every module subset, measured)")
    assert set(page.first_column("Internal-vote weight")) == {"mean", "answer_prob", "trace_prob"}
    assert set(page.first_column("Module statistics per expert")) == {"base", "expert"}
    assert "oracle@N (%)" in page.first_column("Module statistics over all questions")


def check_eval(page: Page, shapes_test) -> None:
    assert pngs(page) == []
    head = dict(page.tables["Headline numbers"]["rows"])
    assert head["answered"] == "4" and head["errors"] == "1" and head["input rows"] == "5"
    assert set(page.first_column("Accuracy per question type")) == {s.question_type for s in shapes_test[:4]}
    assert page.tables["Errors"]["rows"] == [["shapes:test|row:7", "load", "row 7: <b>no image</b>"]]


def test_probe_page(probe_run):
    r = runner.invoke(app, ["report", str(probe_run)])
    assert r.exit_code == 0 and r.stdout.strip() == str(probe_run / "report.html")
    page = Page((probe_run / "report.html").read_text())
    check_probe(page)
    assert page.forbidden == []


def test_tts_page(tts_run):
    page = Page(build_report(tts_run).read_text())
    check_tts(page)
    assert page.forbidden == []


def test_eval_page_escapes_and_hides_secrets(eval_run, shapes_test, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(eval_run, run, ignore=shutil.ignore_patterns("traces", "results.jsonl"))
    cfg = json.loads((run / "config.json").read_text())
    cfg |= {"api_key": "sk-abcdefghijklmnop", "hf_token": "hf_ABCDEFGHIJKLMNOP", "Secret": "s3cr3t",
            "base_urls": ["http://user:pa55w0rd@server:8000/v1"], "note": "uses hf_QRSTUVWXYZabcd <script>x</script>"}
    (run / "config.json").write_text(json.dumps(cfg))
    text = build_report(run).read_text()
    for leaked in ("sk-abcdefghijklmnop", "hf_ABCDEFGHIJKLMNOP", "s3cr3t", "pa55w0rd", "hf_QRSTUVWXYZabcd", "<script",
                   "<b>"):
        assert leaked not in text
    page = Page(text)
    assert page.forbidden == []
    settings = dict(page.tables["Run configuration"]["rows"])
    assert "api_key" not in settings and "hf_token" not in settings and "Secret" not in settings
    assert settings["base_urls"] == "http://server:8000/v1" and settings["max_new_tokens"] == "128"
    assert settings["note"] == "uses [redacted] <script>x</script>"  # escaped in the file, text again here
    check_eval(page, shapes_test)


def test_not_a_run_or_partial_run_is_one_clear_error(tmp_path, eval_run):
    with pytest.raises(ValueError, match="no such run folder"):
        build_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a catts run folder"):
        build_report(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(eval_run / "config.json", partial)
    with pytest.raises(ValueError, match=f"{partial}.*no summary.json.*unfinished or partial"):
        build_report(partial)
    (partial / "summary.json").write_text('{"n": 3}')
    with pytest.raises(ValueError, match="summary.json is incomplete"):
        build_report(partial)
    r = runner.invoke(app, ["report", str(partial)])
    assert r.exit_code == 2 and "incomplete" in r.output and len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output and not (partial / "report.html").exists()


# ---- the same pages in a real browser -------------------------------------------------------------------
@needs_browser
def test_pages_in_headless_chromium(probe_run, tts_run, eval_run, shapes_test, tmp_path):
    for run, check in ((probe_run, check_probe), (tts_run, check_tts),
                       (eval_run, lambda page: check_eval(page, shapes_test))):
        path = build_report(run)
        source, dom = path.read_text(), chromium("--dump-dom", path.resolve().as_uri(), tmp=tmp_path).stdout
        assert "<html" in dom[:200] and "</table>" in dom, dom[:300]
        if "&#x27;" in source:  # the browser's own serialisation of its DOM, not the file: ' is plain text there
            assert "&#x27;" not in dom and "'" in dom
        check(Page(dom))


@needs_browser
def test_probe_page_renders_its_figures(probe_run, tmp_path):
    shot = tmp_path / "probe.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,2400", build_report(probe_run).resolve().as_uri(),
             tmp=tmp_path)
    assert shot.stat().st_size > 20_000
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert px.shape == (2400, 1100, 3)
    # the page's own style is grey on white: saturated pixels come only from the inlined figures
    colourful = int(((px.max(axis=2) - px.min(axis=2)) > 80).sum())
    assert colourful > 500, colourful


# ---- catts demo: the whole story in one page ------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = runner.invoke(app, ["demo", "--data", "shapes:test", "--probe-limit", "3", "--tts-limit", "2", "--n", "2",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "## Test-time scaling" in r.output and "report.html" in r.output
    return out


def check_demo(page: Page) -> None:
    # Figure 1 and the reliability grid of each probe (one degradation kind), one scaling plot per tts run
    assert len(pngs(page)) == 2 * 2 + 2
    from catts.jobs.demo import trained_confidence
    from catts.report.finding import CONFIDENCE_WORDS, FINDING_CONFIDENCES

    kind = trained_confidence("tiny-cdrl")    # the shipped model's cdrl_config.json names it
    trained = f"Base against CDRL: {CONFIDENCE_WORDS[kind]} (the confidence CDRL trains)"
    beside = {f"Base against CDRL: {CONFIDENCE_WORDS[k]} (beside it)" for k in FINDING_CONFIDENCES if k != kind}
    assert {trained} | beside <= set(page.tables)
    assert [r[:2] for r in page.tables[trained]["rows"]] == [["shapes:test", "base"], ["shapes:test", "cdrl"]]
    ablation = page.tables["The paper's ablation: accuracy over all questions and levels of the tts runs"]
    assert [r[0] for r in ablation["rows"]] == ["base (pass@1)", "CDRL only (pass@1)", "CA-TTS only",
                                               "CDRL + CA-TTS"]
    assert ablation["rows"][0][2] == "+0.0"
    assert "ca-tts" in page.first_column("Every method, base and CDRL sampler (same questions, levels and expert)")
    assert page.tables["Methods"]["rows"]  # the steps' own bodies follow


def test_demo_folder_and_page(demo_run):
    import json

    from catts.jobs.demo import STEPS

    summary = json.loads((demo_run / "summary.json").read_text())
    assert summary["steps"] == list(STEPS)
    for step in STEPS:  # every step is an ordinary run folder: catts report works on it alone
        assert (demo_run / step / "summary.json").is_file()
        assert build_report(demo_run / step).is_file()
    models = {json.loads((demo_run / s / "config.json").read_text())["model"] for s in ("tts-base", "tts-cdrl")}
    assert models == {"tiny", "tiny-cdrl"}
    head = summary["headline"]
    base, cdrl = head["tts"]["base"], head["tts"]["cdrl"]
    assert [row[1] for row in head["ablation"]] == [base["pass@1"], cdrl["pass@1"], base["ca-tts"], cdrl["ca-tts"]]
    check_demo(Page((demo_run / "report.html").read_text()))
    # a second call resumes: nothing is asked again, the same numbers come back
    r = runner.invoke(app, ["demo", "--data", "shapes:test", "--probe-limit", "3", "--tts-limit", "2", "--n", "2",
                            "--out", str(demo_run)])
    assert r.exit_code == 0, r.output
    assert json.loads((demo_run / "summary.json").read_text())["headline"] == head


@needs_browser
def test_demo_page_in_headless_chromium(demo_run, tmp_path):
    path = demo_run / "report.html"
    dom = chromium("--dump-dom", path.resolve().as_uri(), tmp=tmp_path).stdout
    assert "</table>" in dom
    check_demo(Page(dom))
