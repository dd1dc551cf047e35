"""``edge-mer bench``: per-stage latency, fps and accuracy per runner x precision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli.common import console, err_console, errors


@errors
def bench(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by `edge-mer convert`.")],
    source: Annotated[
        str | None,
        typer.Option(
            help="Source URI (default: the synthetic stream at the bundle's fps, replayed "
            "from memory)."
        ),
    ] = None,
    frame_format: Annotated[
        str,
        typer.Option(
            help="The replayed stream's frames: auto (gray for a gray model, as picam:// and "
            "csi:// give it; else BGR), gray, or bgr (a USB camera's). Not with --source."
        ),
    ] = "auto",
    frames: Annotated[int, typer.Option(help="Timed frames per runner x precision.")] = 600,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up frames per run.")] = 100,
    runners: Annotated[
        str, typer.Option(help="Comma-separated: onnxruntime, tensorrt.")
    ] = "onnxruntime,tensorrt",
    precisions: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: fp32, int8, int8-u8s8 (default: fp32, int8, and int8-u8s8 "
            "when the bundle has it)."
        ),
    ] = None,
    min_agreement: Annotated[
        float, typer.Option(help="Top-1 agreement with ORT FP32 below this fails the row.")
    ] = 0.98,
    face: Annotated[
        str | None,
        typer.Option(help="Face detector (default: none for synthetic sources, else haar)."),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            help="ONNX Runtime threads (0 = by the encoder's size: 1 under 30 M MACs a frame, "
            "else ORT's default)."
        ),
    ] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write Markdown tables here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of latency per stage and over time (`plots` extra)."),
    ] = None,
) -> None:
    """Benchmark a bundle on this machine: per-stage latency percentiles, fps, pipeline
    efficiency, streaming vs sliding window, and top-1 agreement with FP32 per runner x
    precision. Runners that cannot run here become rows that say why."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_mer.bench.report import ensure_writable, write_json, write_markdown
    from edge_mer.bench.run import BenchOptions, run_bench
    from edge_mer.errors import installed, require
    from edge_mer.pipeline.preprocess import import_cv2

    opts = BenchOptions(
        source=source,
        frame_format=frame_format.strip().lower(),
        frames=frames,
        warmup=warmup,
        runners=_split(runners),
        precisions=_split(precisions) if precisions is not None else None,
        min_agreement=min_agreement,
        face=face,
        threads=threads,
    )
    opts.check()
    ensure_writable([json_out, markdown, plot])
    import_cv2("edge-mer bench")  # every frame is resized with it; say so before any run
    # A runner that cannot run here is a row that says why; with none at all, nothing runs.
    if not any(installed(r) for r in opts.runners):
        require(opts.runners[0], purpose="edge-mer bench")
    if plot is not None:
        from edge_mer.bench.plots import require_matplotlib

        require_matplotlib()

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("bench", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        report = run_bench(bundle, opts, progress=progress)

    print_report(report)
    if json_out is not None:
        write_json(report, json_out)
        err_console.print(f"wrote {json_out}")
    if markdown is not None:
        write_markdown(report, markdown)
        err_console.print(f"wrote {markdown}")
    if plot is not None:
        from edge_mer.bench.plots import plot_report

        plot_report(report, plot)
        err_console.print(f"wrote {plot}")


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def print_report(report: dict) -> None:
    """The report's tables on the terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from edge_mer.bench.report import (
        accuracy_rows,
        frame_loop_line,
        machine_rows,
        runs_with_stats,
        source_line,
        stage_names,
        stage_rows,
        streaming_line,
        threads_line,
    )

    def table(title: str, head: list[str], rows: list[list[str]], left: int = 1) -> Table:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < left or h in ("status", "reason") else "right")
        for r in rows:
            t.add_row(*r)
        return t

    # A pipe reports 80 columns; the row table needs more, and a file has no width limit.
    out = Console(highlight=False, soft_wrap=True, width=max(console.width, 120))
    head, rows = accuracy_rows(report)
    # The reasons are long: one line each under the table keeps the table readable.
    out.print(
        table(
            f"{report['bundle']['name']}: runners x precisions",
            head[:-1],
            [r[:-1] for r in rows],
            2,
        ),
    )
    for r in rows:
        if r[-1]:
            console.print(f"  {r[0]} {r[1]}: {r[2]}: {r[-1]}")
    console.print(source_line(report))
    for line in (frame_loop_line(report), threads_line(report)):
        if line:
            console.print(line)
    stages = stage_names(report)
    for run in runs_with_stats(report):
        console.print(
            table(
                f"stage latency (ms): {run['runner']} {run['precision']}", *stage_rows(run, stages)
            )
        )
    console.print(streaming_line(report))
    console.print(table("machine", ["fact", "value"], [list(p) for p in machine_rows(report)]))
