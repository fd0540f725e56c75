"""The ``catts`` command line: a thin layer over the Python API (``catts.jobs``, ``catts.data``, ...).

Every command checks all of its arguments (data specs and files, degradation specs, device, dtype,
saliency source, the run folder's config) before it loads a model or creates a run folder, and
reports a bad argument as one line (exit code 2). ``CATTS_DEBUG=1`` shows the full traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import catts

app = typer.Typer(help="catts: make multimodal LLMs know when they do not know. "
                       "Probe confidence under degraded images, calibrate, and scale test-time compute by confidence.",
                  no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Embedded datasets and data files.", no_args_is_help=True)
tiny_app = typer.Typer(help="The embedded tiny vision-language models (tiny, tiny-expert).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tiny_app, name="tiny")
train_app = typer.Typer(help="Training (CDRL: GRPO with confidence-driven rewards; needs the train extra).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console(stderr=True)


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Format(str, Enum):
    jsonl = "jsonl"
    tsv = "tsv"


# ---- options shared by every command that runs a model ------------------------------------------
Model = Annotated[str, typer.Option(help="Embedded model (tiny, tiny-cdrl, tiny-expert) or a local transformers model folder.")]
Limit = Annotated[Optional[int], typer.Option(help="Questions per dataset: the first N (0 = all).")]
Out = Annotated[Path, typer.Option(help="Run folder (results.jsonl, traces/, summary.json); a killed run resumes "
                                        "here, a run with another config is refused.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Start afresh in --out, removing the run there.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Sequences per forward pass (answers do not depend on it in "
                                                    "float32; in bf16/fp16 up to rounding).")]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Generation budget per answer.")]
Device = Annotated[str, typer.Option(help="auto, cpu, mps, cuda or cuda:N.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="auto = bf16 on GPU, fp32 on CPU.")]
BaseUrl = Annotated[Optional[list[str]], typer.Option(
    "--base-url", help="For --model openai:NAME: the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1; "
                       "repeatable (requests are spread over the servers). The key comes from OPENAI_API_KEY.")]
DataList = Annotated[Optional[list[str]], typer.Option(
    "--data", help="NAME:SPLIT, BENCHMARK:PATH (mathvista, mathvision, mmmu, mmstar) or a .jsonl/.tsv file; "
                   "repeatable. Default: easyvqa:test and shapes:test.")]
MaxPixels = Annotated[int, typer.Option(min=1, help="Shrink larger images (aspect kept) to at most this many pixels "
                                                    "before anything else sees them.")]


class UsageError(Exception):
    """A bad argument: printed as one line, exit code 2."""


def clean_errors(fn: Callable) -> Callable:
    """Bad arguments and bad files end the command with one line, not a traceback."""
    from catts.data import DataError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UsageError, DataError, FileNotFoundError, ValueError, OSError, ImportError) as e:
            if os.environ.get("CATTS_DEBUG"):
                raise
            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"catts {catts.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """catts: confidence-aware evaluation and test-time scaling for vision-language models."""
    from catts.jobs.progress import setup_logging

    setup_logging()


# ---- checks that run before anything is loaded ---------------------------------------------------
def check_data_spec(spec: str) -> None:
    from catts.data import EMBEDDED

    path = Path(spec)
    if path.suffix in (".jsonl", ".tsv") or path.exists():
        if not path.is_file():
            raise UsageError(f"--data {spec}: no such file")
        if path.suffix not in (".jsonl", ".tsv"):
            raise UsageError(f"--data {spec}: expected a .jsonl or .tsv file")
        return
    name, _, split = spec.partition(":")
    if name not in EMBEDDED or split not in ("train", "val", "test"):
        raise UsageError(f"--data {spec!r}: expected NAME:SPLIT with NAME in {', '.join(EMBEDDED)} and SPLIT in "
                         "train, val, test (e.g. shapes:test), or a .jsonl/.tsv file")


def check_model(model: str, device: str, dtype: Dtype, max_pixels: int | None, base_urls=None) -> dict:
    """Resolve model folder, device and dtype without loading; returns the backend's run identity."""
    from catts.models import resolve_model_path
    from catts.models.hf import identity, resolve_device_dtype
    from catts.models.openai_backend import is_openai

    if is_openai(model):
        if not base_urls:
            raise UsageError(f"--model {model}: give the server with --base-url URL (e.g. http://127.0.0.1:8000/v1)")
        return {"model": model, "backend": "openai", "base_urls": list(base_urls), "max_pixels": max_pixels}

    resolve_model_path(model)
    dev, dt = resolve_device_dtype(device, dtype.value)
    return identity(model, dev, dt, max_pixels)


def load_rows(spec: str, limit: int | None):
    """Samples (the first ``limit``) and the rows that could not be loaded; an empty source is an error."""
    from catts.data import load_data

    errors: list = []
    samples = load_data(spec, errors)
    if not samples and not errors:
        raise UsageError(f"--data {spec}: no rows")
    for e in errors[:10]:
        console.print(f"[yellow]skipped[/yellow] {escape(e['error'])}", highlight=False, soft_wrap=True)
    if len(errors) > 10:
        console.print(f"[yellow]... and {len(errors) - 10} more rows that could not be loaded (all in the run "
                      "folder)[/yellow]")
    return (samples[:limit] if limit else samples), errors


def load_model_and(model: str, device: str, dtype: Dtype, batch_size: int, max_pixels: int | None,
                   load: Callable, base_urls=None):
    """Load the model while ``load()`` (data) runs on a thread; returns (backend, load's result)."""
    from catts.models import load_backend

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load)
        with console.status(f"loading {model}"):
            backend = load_backend(model, device=device, dtype=dtype.value, batch_size=batch_size,
                                   max_pixels=max_pixels, base_urls=base_urls or ())
        return backend, pending.result()


# ---- commands -------------------------------------------------------------------------------------
@app.command("eval")
@clean_errors
def eval_cmd(model: Model = "tiny",
             data: Annotated[str, typer.Option(help="NAME:SPLIT of embedded data, or a .jsonl/.tsv file.")]
             = "easyvqa:test",
             limit: Limit = None, out: Out = Path("runs/eval"), overwrite: Overwrite = False,
             batch_size: BatchSize = 16, max_new_tokens: MaxNewTokens = 128, device: Device = "auto",
             dtype: DtypeOpt = Dtype.auto, max_pixels: MaxPixels = 1024 * 1024, base_url: BaseUrl = None) -> None:
    """Greedy answers of MODEL on DATA: accuracy (all and parsed answers), calibration, per-type accuracy."""
    from catts.jobs.eval import evaluate
    from catts.jobs.progress import console_progress
    from catts.jobs.rundir import check_resumable

    check_data_spec(data)
    ident = check_model(model, device, dtype, max_pixels, base_url)
    config = {"task": "eval", **ident, "max_new_tokens": max_new_tokens, "data": data, "limit": limit or None}
    if not overwrite:
        check_resumable(out, config)
    backend, (samples, errors) = load_model_and(model, device, dtype, batch_size, max_pixels,
                                                lambda: load_rows(data, limit or None), base_url)
    with console_progress(console) as progress:
        s = evaluate(backend, samples, out, max_new_tokens=max_new_tokens,
                     config={"data": data, "limit": limit or None},
                     load_errors=errors, progress=progress, overwrite=overwrite, batch=batch_size)
    table = Table(title=f"{model} on {data} (n={s['n']})")
    for col in ("question type", "accuracy", "n"):
        table.add_column(col)
    for k, v in s["per_question_type"].items():
        table.add_row(k, f"{v['accuracy']:.3f}", str(v["n"]))
    table.add_row("all", f"{s['accuracy']:.3f}", str(s["n"]))
    Console().print(table)
    parsed = f"{s['accuracy_parsed']:.3f}" if s["n_parsed"] else "n/a (none parsed)"
    print(f"accuracy {s['accuracy']:.3f} over all answers, {parsed} over parsed answers; "
          f"unparsed rate {s['unparsed_rate']:.3f}; {s['n_errors']} rows not answered (see summary.json); "
          f"written to {out}")


@app.command("probe")
@clean_errors
def probe_cmd(
    model: Model = "tiny",
    data: DataList = None,
    degrade: Annotated[Optional[list[str]], typer.Option(
        help="KIND:LEVELS, repeatable, e.g. diffusion:0,143,285, diffusion:L8 (8 even levels), blur:1,2,3,4,5. "
             "Default: none:0, diffusion:L8 and gaussian_noise, blur, jpeg, lowres at 1-5.")] = None,
    limit: Limit = 150,
    map_limit: Annotated[int, typer.Option(min=2, help="Held-out (val) questions per dataset for fitting the "
                                                       "C -> [0,1] map.")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the degradation noise.")] = 0,
    saliency: Annotated[str, typer.Option(help="Saliency for key_region noise: spectral (no weights), model (the "
                                               "probed model's own vision tower) or a local CLIP folder.")]
    = "spectral",
    out: Out = Path("runs/probe"), overwrite: Overwrite = False, batch_size: BatchSize = 64,
    max_new_tokens: MaxNewTokens = 64, device: Device = "auto", dtype: DtypeOpt = Dtype.auto,
    max_pixels: MaxPixels = 1024 * 1024, base_url: BaseUrl = None,
) -> None:
    """Perceptual bluntness: accuracy and confidence of MODEL as images degrade (Figure 1, calibration per level)."""
    from catts.jobs.probe import DEFAULT_DATA, DEFAULT_DEGRADE, ProbeConfig, load_datasets, probe_identity_from, \
        run_probe
    from catts.jobs.progress import console_progress
    from catts.jobs.rundir import check_resumable

    cfg = ProbeConfig(model=model, data=list(data or DEFAULT_DATA), degrade=list(degrade or DEFAULT_DEGRADE),
                      limit=limit or None, map_limit=map_limit, seed=seed, max_new_tokens=max_new_tokens,
                      saliency=saliency)
    for spec in cfg.data:
        check_data_spec(spec)
    cfg.sweeps()  # raises on a bad --degrade
    if saliency not in ("spectral", "model") and not (Path(saliency) / "config.json").is_file():
        raise UsageError(f"--saliency {saliency}: expected spectral, model or a local CLIP folder with a config.json")
    ident = check_model(model, device, dtype, max_pixels, base_url)
    if not overwrite:
        check_resumable(out, probe_identity_from(cfg, ident))
    backend, datasets = load_model_and(model, device, dtype, batch_size, max_pixels, lambda: load_datasets(cfg),
                                       base_url)
    for ds in datasets:
        if not ds.samples and not ds.errors:
            raise UsageError(f"--data {ds.spec}: no rows")
    with console_progress(console) as progress:
        run_probe(backend, cfg, out, datasets=datasets, progress=progress, batch=batch_size, overwrite=overwrite)
    sys.stdout.write((out / "summary.md").read_text())
    print(f"written to {out}")


@app.command("tts")
@clean_errors
def tts_cmd(
    model: Model = "tiny",
    expert: Annotated[str, typer.Option(help="The voter, critic and planner: an embedded model, a local model "
                                             "folder, or 'base' (the base model itself).")] = "tiny-expert",
    data: DataList = None,
    degrade: Annotated[Optional[list[str]], typer.Option(
        help="KIND:LEVELS the questions are asked at (the probe's grammar), repeatable. "
             "Default: diffusion:0,285,571,856.")] = None,
    limit: Limit = 100,
    n: Annotated[int, typer.Option(min=1, help="Self-consistency samples per question.")] = 8,
    modules: Annotated[str, typer.Option(help="Comma-separated CA-TTS modules: self-consistency, reflection, "
                                              "self-check.")] = "self-consistency,reflection,self-check",
    voter: Annotated[str, typer.Option(help="likelihood (a local expert's likelihood of each candidate) or "
                                            "generative (a JSON array of probabilities).")] = "likelihood",
    weight: Annotated[str, typer.Option(help="Internal-vote weight: mean (C, the paper's), answer_prob or "
                                             "trace_prob.")] = "mean",
    planner: Annotated[bool, typer.Option(help="Let the expert order the modules.")] = True,
    scaling: Annotated[str, typer.Option(help="Comma-separated N to measure every method at, e.g. 1,2,4,8,16,32 "
                                              "(samples are nested: the first 8 of 32 are the N = 8 ones).")] = "",
    gate_threshold: Annotated[float, typer.Option(help="Gated CA-TTS: stop sampling, and skip reflection and "
                                                       "self-check, once the leader's share reaches this.")] = 0.9,
    gate_wave: Annotated[int, typer.Option(min=1, help="Gated CA-TTS: samples per wave.")] = 2,
    check_level: Annotated[int, typer.Option(help="Diffusion t of the self-check's noised copy.")] = 500,
    ablations: Annotated[bool, typer.Option(help="Also measure every module subset, expert = base and the three "
                                                 "vote weights.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of sampling and degradation noise.")] = 0,
    out: Out = Path("runs/tts"), overwrite: Overwrite = False, batch_size: BatchSize = 64,
    max_new_tokens: MaxNewTokens = 128, device: Device = "auto", dtype: DtypeOpt = Dtype.auto,
    max_pixels: MaxPixels = 1024 * 1024, base_url: BaseUrl = None,
    expert_base_url: Annotated[Optional[list[str]], typer.Option(
        help="For --expert openai:NAME: its server(s), if not those of --base-url; repeatable.")] = None,
) -> None:
    """Confidence-aware test-time scaling: CA-TTS against pass@1, majority, DeepConf and best-of-N, same samples."""
    from catts.jobs.probe import Dataset
    from catts.jobs.progress import console_progress
    from catts.jobs.rundir import check_resumable
    from catts.jobs.tts import DEFAULT_DATA, DEFAULT_DEGRADE, TTSConfig, run_tts, tts_identity
    from catts.models import load_backend

    try:
        steps = [int(x) for x in scaling.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--scaling {scaling!r}: expected comma-separated integers, e.g. 1,2,4,8") from None
    cfg = TTSConfig(model=model, expert=expert, data=list(data or DEFAULT_DATA),
                    degrade=list(degrade or DEFAULT_DEGRADE), limit=limit or None, n=n,
                    modules=[m.strip() for m in modules.split(",") if m.strip()], planner=planner, voter=voter,
                    weight=weight, scaling=steps, gate_threshold=gate_threshold, gate_wave=gate_wave,
                    check_level=check_level, ablations=ablations, seed=seed)
    cfg.tokens = type(cfg.tokens)(base=max_new_tokens)
    for spec in cfg.data:
        check_data_spec(spec)
    cfg.validate()
    from catts.models.openai_backend import is_openai
    if is_openai(expert) and voter == "likelihood":
        raise UsageError(f"--expert {expert}: a server cannot score given answers; use --voter generative")
    ident = check_model(model, device, dtype, max_pixels, base_url)
    expert_urls = expert_base_url or base_url
    expert_ident = None if expert == "base" else check_model(expert, device, dtype, max_pixels, expert_urls)
    identity = tts_identity(cfg, ident, expert_ident)
    if not overwrite:
        check_resumable(out, identity)
    backend, loaded = load_model_and(model, device, dtype, batch_size, max_pixels,
                                     lambda: [(spec, *load_rows(spec, cfg.limit)) for spec in cfg.data], base_url)
    experts = {"expert": backend}
    if expert != "base":
        with console.status(f"loading {expert}"):
            experts = {"expert": load_backend(expert, device=device, dtype=dtype.value, batch_size=batch_size,
                                              max_pixels=max_pixels, base_urls=expert_urls or ()), "base": backend}
    datasets = [Dataset(spec, samples, errors) for spec, samples, errors in loaded]
    with console_progress(console) as progress:
        run_tts(backend, experts, cfg, out, datasets, progress=progress, overwrite=overwrite, identity=identity)
    sys.stdout.write((out / "summary.md").read_text())
    print(f"written to {out}")


@app.command("demo")
@clean_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Demo folder: one run folder per step, summary.md, report.html; a "
                                           "killed demo resumes here.")] = Path("runs/demo"),
    data: DataList = None,
    probe_limit: Annotated[int, typer.Option(min=1, help="Probe questions per dataset.")] = 150,
    tts_limit: Annotated[int, typer.Option(min=1, help="CA-TTS questions per dataset.")] = 50,
    n: Annotated[int, typer.Option(min=1, help="CA-TTS samples per question.")] = 8,
    overwrite: Overwrite = False, device: Device = "auto",
) -> None:
    """The whole story on the embedded models: probe of tiny against tiny-cdrl, CA-TTS against the baselines with
    either sampler, one HTML report (out/report.html) and the headline numbers here."""
    from catts.jobs.demo import DemoConfig, run_demo
    from catts.jobs.progress import console_progress

    cfg = DemoConfig(probe_limit=probe_limit, tts_limit=tts_limit, n=n)
    if data:
        for spec in data:
            check_data_spec(spec)
        cfg.data = list(data)
    with console_progress(console) as progress:
        run_demo(out, cfg, progress=progress, overwrite=overwrite, device=device)
    sys.stdout.write((out / "summary.md").read_text())
    print(f"report: {out / 'report.html'}")


@app.command("report")
@clean_errors
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished probe, tts or eval run folder.")],
) -> None:
    """One self-contained HTML page of RUN_DIR (config, tables, figures): writes and prints RUN_DIR/report.html."""
    from catts.report.html import build_report

    print(build_report(run_dir))


@app.command("regrade")
@clean_errors
def regrade_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished (or killed) eval or probe run folder.")],
) -> None:
    """Re-extract and re-score RUN_DIR from its stored traces (no model): after a rule or confidence change."""
    from catts.jobs.regrade import regrade

    summary = regrade(run_dir)
    if (run_dir / "summary.md").exists() and summary.get("levels"):
        sys.stdout.write((run_dir / "summary.md").read_text())
    print(f"regraded {run_dir}")


@data_app.command("export")
@clean_errors
def data_export(
    name: Annotated[str, typer.Argument(help="Embedded dataset: easyvqa or shapes.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    format: Annotated[Format, typer.Option("--format", help="jsonl (images as PNG files beside it) or tsv "
                                                            "(VLMEvalKit).")] = Format.jsonl,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data_export"),
    limit: Limit = None,
) -> None:
    """Write an embedded dataset as JSONL or VLMEvalKit TSV."""
    from catts.data import write_jsonl, write_tsv

    check_data_spec(f"{name}:{split}")
    samples, _ = load_rows(f"{name}:{split}", limit or None)
    path = out / f"{name}_{split}.{format.value}"
    (write_jsonl if format == Format.jsonl else write_tsv)(samples, path)
    print(path)


@data_app.command("list")
def data_list() -> None:
    """The embedded datasets and their split sizes."""
    from catts.data import EMBEDDED, load_embedded

    for name in EMBEDDED:
        for split in ("train", "val", "test"):
            print(f"{name}:{split}\t{len(load_embedded(name, split))}")


@tiny_app.command("path")
@clean_errors
def tiny_path(name: Annotated[str, typer.Argument(help="tiny or tiny-expert.")] = "tiny") -> None:
    """Print the folder of an embedded model (e.g. to serve it with vLLM)."""
    from catts.models import resolve_model_path

    print(resolve_model_path(name))


@tiny_app.command("train")
@clean_errors
def tiny_train(
    name: Annotated[str, typer.Argument(help="tiny (clean images only) or tiny-expert (also degraded copies).")]
    = "tiny",
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: the embedded weights folder).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Override the number of optimiser steps of every stage.")]
    = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = default).")] = 0,
) -> None:
    """Reproduce an embedded tiny model from the embedded train splits."""
    from catts.models import WEIGHTS_DIR
    from catts.models.tiny.train import train_recipe

    overrides = {"threads": threads, **({"steps": steps, "stop_after": 0} if steps else {})}
    path = train_recipe(name, out or WEIGHTS_DIR / name, log=console.print, **overrides)
    log = json.loads((path / "train_log.json").read_text())
    console.print(f"saved to {path} after {log['train_seconds']:.0f}s of training")


@train_app.command("cdrl", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@clean_errors
def train_cdrl_cmd(ctx: typer.Context) -> None:
    """CDRL training. Every option is parsed by TRL's TrlParser over (CDRLConfig, GRPOConfig): --config FILE.yaml
    (e.g. catts/train/configs/cdrl_tiny.yaml) plus overrides such as --learning_rate 1e-5; --dry_run prints the
    parsed configuration and exits."""
    from dataclasses import asdict

    from catts.train.cdrl import parse_cdrl_args, train_cdrl

    if not ctx.args:  # TRL's help: every field of CDRLConfig and GRPOConfig
        parse_cdrl_args(["--help"])
    cdrl_cfg, grpo_cfg = parse_cdrl_args(list(ctx.args))
    if not sys.stderr.isatty() and not any(a.startswith("--disable_tqdm") for a in ctx.args):
        grpo_cfg.disable_tqdm = True  # off a terminal the bar's carriage returns garble a log: the step lines say it
    if cdrl_cfg.dry_run:
        print(json.dumps({"cdrl": asdict(cdrl_cfg), "grpo": grpo_cfg.to_dict()}, indent=2, default=str))
        return
    out = train_cdrl(cdrl_cfg, grpo_cfg)
    console.print(f"saved to {out}")


@train_app.command("interpolate")
@clean_errors
def train_interpolate_cmd(
    base: Annotated[str, typer.Option(help="The model training started from (embedded name or folder).")],
    trained: Annotated[str, typer.Option(help="The trained model's folder.")],
    weight: Annotated[float, typer.Option(help="Fraction of the change kept: base + weight * (trained - base).")],
    out: Annotated[Path, typer.Option(help="Folder for the interpolated model.")],
) -> None:
    """Weight-space interpolation of a trained model towards the one it started from (WiSE-FT; the same as
    CDRL's --interpolation, after the fact)."""
    from catts.train.interpolate import interpolate_weights

    console.print(f"saved to {interpolate_weights(base, trained, weight, out)}")


if __name__ == "__main__":
    app()
