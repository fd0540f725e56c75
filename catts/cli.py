"""The ``catts`` command line: a thin layer over the Python API (``catts.eval``, ``catts.data``, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import catts

app = typer.Typer(help="catts: make multimodal LLMs know when they do not know. "
                       "Probe confidence under degraded images, calibrate, and scale test-time compute by confidence.",
                  no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Embedded datasets and data files.", no_args_is_help=True)
tiny_app = typer.Typer(help="The embedded tiny vision-language models (tiny, tiny-expert).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tiny_app, name="tiny")
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"catts {catts.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """catts: confidence-aware evaluation and test-time scaling for vision-language models."""


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


def _load(data: str, limit: Optional[int]):
    from catts.data import DataError, load_data

    errors: list[str] = []
    try:
        samples = load_data(data, errors)
    except (DataError, FileNotFoundError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    for e in errors[:20]:
        console.print(f"[yellow]skipped[/yellow] {e}")
    if len(errors) > 20:
        console.print(f"[yellow]... and {len(errors) - 20} more malformed rows[/yellow]")
    return samples[:limit] if limit else samples


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("tiny", help="Embedded model (tiny, tiny-expert) or a local transformers model folder."),
    data: str = typer.Option("easyvqa:test", help="NAME:SPLIT of embedded data, or a .jsonl/.tsv file."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N samples."),
    out: Path = typer.Option(Path("runs/eval"), help="Run folder (per-sample JSONL, summary.json); resumes if present."),
    batch_size: int = typer.Option(16, help="Sequences per forward pass (results do not depend on it)."),
    max_new_tokens: int = typer.Option(128, help="Generation budget per answer."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
    max_pixels: int = typer.Option(1024 * 1024, help="Shrink larger images (aspect kept) before the processor."),
) -> None:
    """Greedy answers of MODEL on DATA: accuracy, unparsed rate and per-question-type accuracy."""
    from catts.eval import evaluate
    from catts.models import load_backend

    samples = _load(data, limit)
    try:
        backend = load_backend(model, device=device, dtype=dtype, batch_size=batch_size, max_pixels=max_pixels)
    except (FileNotFoundError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    with progress_bar() as bar:
        task = bar.add_task(f"eval {model} on {data}", total=len(samples))
        summary = evaluate(backend, samples, out, max_new_tokens=max_new_tokens, config={"data": data, "limit": limit},
                           progress=lambda k: bar.advance(task, k))
    table = Table(title=f"{model} on {data} (n={summary['n']})")
    for col in ("question type", "accuracy", "n"):
        table.add_column(col)
    for k, v in summary["per_question_type"].items():
        table.add_row(k, f"{v['accuracy']:.3f}", str(v["n"]))
    table.add_row("[b]all[/b]", f"[b]{summary['accuracy']:.3f}[/b]", str(summary["n"]))
    Console().print(table)
    console.print(f"unparsed rate {summary['unparsed_rate']:.3f}, errors {summary['n_errors']}; written to {out}")


@app.command("probe")
def probe_cmd(
    model: str = typer.Option("tiny", help="Embedded model (tiny, tiny-expert) or a local transformers model folder."),
    data: Optional[list[str]] = typer.Option(None, help="NAME:SPLIT or a .jsonl/.tsv file; repeatable. "
                                             "Default: easyvqa:test and shapes:test."),
    degrade: Optional[list[str]] = typer.Option(None, help="KIND:LEVELS, repeatable, e.g. diffusion:0,143,285, "
                                                "diffusion:L8 (8 even levels), blur:1,2,3,4,5. Default: none:0, "
                                                "diffusion:L8 and gaussian_noise, blur, jpeg, lowres at 1-5."),
    limit: Optional[int] = typer.Option(150, help="Questions per dataset (0 = all)."),
    map_limit: int = typer.Option(150, help="Held-out (val) questions per dataset for fitting the C -> [0,1] map."),
    seed: int = typer.Option(0, help="Seed of the degradation noise."),
    saliency: str = typer.Option("spectral", help="Saliency for key_region noise: spectral (no weights), model "
                                 "(the probed model's own vision tower) or a local CLIP checkpoint folder."),
    out: Path = typer.Option(Path("runs/probe"), help="Run folder; a killed run resumes here."),
    batch_size: int = typer.Option(64, help="Sequences per forward pass (results do not depend on it)."),
    max_new_tokens: int = typer.Option(64, help="Generation budget per answer."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1 or auto."),
    dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."),
) -> None:
    """Perceptual bluntness: accuracy and confidence of MODEL as images degrade (Figure 1, calibration per level)."""
    from catts.models import load_backend
    from catts.perception.degrade import parse_degrade_spec
    from catts.probe import DEFAULT_DATA, DEFAULT_DEGRADE, ProbeConfig, run_probe

    cfg = ProbeConfig(model=model, data=list(data or DEFAULT_DATA), degrade=list(degrade or DEFAULT_DEGRADE),
                      limit=limit or None, map_limit=map_limit, seed=seed, max_new_tokens=max_new_tokens,
                      saliency=saliency)
    try:
        for d in cfg.degrade:
            parse_degrade_spec(d)
        backend = load_backend(model, device=device, dtype=dtype, batch_size=batch_size)
    except (FileNotFoundError, ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    with progress_bar() as bar:
        task = bar.add_task(f"probe {model}", total=None)

        def advance(k: int, total: int) -> None:
            bar.update(task, total=total, advance=k)

        run_probe(backend, cfg, out, progress=advance, batch=batch_size)
    Console().print((out / "summary.md").read_text())
    console.print(f"written to {out}")


@data_app.command("export")
def data_export(
    name: str = typer.Argument(..., help="Embedded dataset: easyvqa or shapes."),
    split: str = typer.Option("test", help="train, val or test."),
    format: str = typer.Option("jsonl", "--format", help="jsonl (images as PNG files beside it) or tsv (VLMEvalKit)."),
    out: Path = typer.Option(Path("data_export"), help="Output folder."),
    limit: Optional[int] = typer.Option(None, help="Export only the first N samples."),
) -> None:
    """Write an embedded dataset as JSONL or VLMEvalKit TSV."""
    from catts.data import write_jsonl, write_tsv

    samples = _load(f"{name}:{split}", limit)
    if format not in ("jsonl", "tsv"):
        console.print("[red]error:[/red] --format must be jsonl or tsv")
        raise typer.Exit(2)
    path = out / f"{name}_{split}.{format}"
    (write_jsonl if format == "jsonl" else write_tsv)(samples, path)
    print(path)


@data_app.command("list")
def data_list() -> None:
    """The embedded datasets and their split sizes."""
    from catts.data import EMBEDDED, load_embedded

    for name in EMBEDDED:
        for split in ("train", "val", "test"):
            print(f"{name}:{split}\t{len(load_embedded(name, split))}")


@tiny_app.command("path")
def tiny_path(name: str = typer.Argument("tiny", help="tiny or tiny-expert.")) -> None:
    """Print the folder of an embedded model (e.g. to serve it with vLLM)."""
    from catts.models import resolve_model_path

    try:
        print(resolve_model_path(name))
    except FileNotFoundError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)


@tiny_app.command("train")
def tiny_train(
    name: str = typer.Argument("tiny", help="tiny (clean images only) or tiny-expert (also degraded copies)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the embedded weights folder)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of optimiser steps of every stage."),
    threads: int = typer.Option(0, help="torch threads (0 = default)."),
) -> None:
    """Reproduce an embedded tiny model from the embedded train splits."""
    from catts.models import WEIGHTS_DIR
    from catts.models.tiny.train import train_recipe

    overrides = {"threads": threads, **({"steps": steps, "stop_after": 0} if steps else {})}
    try:
        path = train_recipe(name, out or WEIGHTS_DIR / name, log=console.print, **overrides)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    log = json.loads((path / "train_log.json").read_text())
    console.print(f"saved to {path} after {log['train_seconds']:.0f}s of training")


if __name__ == "__main__":
    app()
