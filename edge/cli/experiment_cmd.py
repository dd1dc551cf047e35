"""``edge-mer experiment``: run, report, demo and keys of LOSO / cross-dataset studies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_mer.cli.common import StageLog, console, err_console, errors
from edge_mer.errors import InputError

app = typer.Typer(
    help="LOSO, composite and cross-dataset studies of many architectures, with the deployed "
    "INT8 accuracy of every fold.",
    no_args_is_help=True,
)


def _progress_line(summary: dict[str, Any]) -> str:
    if summary.get("status") != "done":
        return f"[red]failed[/red] {summary['key']}: {summary.get('reason')}"
    return (
        f"done {summary['key']}: {summary['train_clips']} train / {summary['test_clips']} test "
        f"clips, {summary['seconds']:.1f} s, INT8 {summary['ms_per_frame']:.3f} ms/frame"
    )


def _run(study: Path, opts: Any, quiet: bool = False) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edge_mer.convert.experiment.runner import run_study

    say = StageLog(quiet)
    with Progress(
        TextColumn("jobs"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("jobs", total=None)

        def on_job(summary: dict[str, Any], i: int, n: int) -> None:
            bar.update(task, completed=i, total=n)
            if not quiet:
                bar.console.print(_progress_line(summary), markup=True, highlight=False)

        return run_study(study, opts, say=say, on_job=on_job)


def _check_study_file(study: Path) -> None:
    if not study.is_file():
        raise InputError(f"study file {str(study)!r} does not exist: write one (see README)")


@app.command("run")
@errors
def run(
    study: Annotated[Path, typer.Argument(help="The study file (TOML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The study's output folder.")],
    jobs: Annotated[int, typer.Option(help="Jobs at a time (torch threads = cores / N).")] = 1,
    backend: Annotated[str, typer.Option(help="local (a process pool) or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else local).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue: skip the jobs already finished.")
    ] = False,
    cache: Annotated[
        Path | None, typer.Option(help="Frame cache folder (default OUT/cache; shareable).")
    ] = None,
    gpus_per_job: Annotated[
        float,
        typer.Option(
            help="ray: GPUs each job declares to the scheduler (training itself runs on the CPU).",
            min=0,
        ),
    ] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run (or --resume) a study: every (model, seed, fold) trained, converted, scored."""
    from edge_mer.convert.experiment.runner import RunOptions

    _check_study_file(study)
    opts = RunOptions(
        out=out,
        jobs=jobs,
        backend=backend,
        address=address,
        resume=resume,
        cache=cache,
        gpus=gpus_per_job,
    )
    results = _run(study, opts, quiet)
    j = results["jobs"]
    console.print(
        f"{j['done']}/{j['total']} jobs finished ({len(j['failed'])} failed) in "
        f"{results['seconds']:.0f} s; {out / 'results.json'}, {out / 'predictions.csv'}"
    )
    console.print(f"report: edge-mer experiment report {out}")


@app.command("report")
@errors
def report(
    folder: Annotated[Path, typer.Argument(help="A study's output folder (--out of run).")],
    markdown: Annotated[Path | None, typer.Option(help="Write the report as Markdown.")] = None,
    latex: Annotated[Path | None, typer.Option(help="Write the tables as LaTeX.")] = None,
    csv: Annotated[Path | None, typer.Option(help="Write the pooled results as CSV.")] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Folder for confusion matrices and accuracy vs latency.")
    ] = None,
) -> None:
    """The paper's tables from a study folder's files (partial runs say what is missing)."""
    from edge_mer.convert.experiment.summary import write_report

    text = write_report(folder, markdown=markdown, latex=latex, csv=csv, plots=plots)
    console.print(text, markup=False, highlight=False)


@app.command("demo")
@errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes.")] = Path(
        "edge-mer-experiment-demo"
    ),
    jobs: Annotated[int, typer.Option(help="Jobs at a time.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier demo.")] = False,
) -> None:
    """A small study on synthetic data: LOSO on CASME II and CASME II -> SMIC-HS, INT8."""
    from edge_mer.convert.experiment.demo import run_demo

    text = run_demo(out, jobs=jobs, force=force, say=StageLog())
    console.print(text, markup=False, highlight=False)


@app.command("keys")
@errors
def keys() -> None:
    """Every key a study file may hold, with its type, default and description."""
    from edge_mer.config.toml_model import describe_fields
    from edge_mer.convert.experiment.study import Study

    for key, tp, default, desc in describe_fields(Study):
        console.print(f"  {key:<32} {tp:<28} {default:<14} {desc}", markup=False)
