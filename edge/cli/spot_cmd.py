"""``edge-mer spot-eval``: a bundle's live events against ground truth on unseen subjects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_mer.cli.common import console, err_console, errors
from edge_mer.errors import InputError


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` items -> a ``[spotter]`` table; values are JSON when they parse
    (numbers, true/false, null), else strings. The config checks keys and values."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--spotter {item!r}: use KEY=VALUE, e.g. --spotter threshold_on=0.3")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@errors
def spot_eval(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder written by `edge-mer convert`.")],
    subjects: Annotated[int, typer.Option(help="Unseen synthetic subjects, one stream each.")] = 5,
    seconds: Annotated[
        float, typer.Option(help="Seconds per stream with micro-expressions (0: none).")
    ] = 60.0,
    distractor_seconds: Annotated[
        float,
        typer.Option(
            help="Seconds of a distractor-only stream per subject (blinks, head drift, "
            "macro-expressions, no micro-expression) for false alarms per minute (0: none)."
        ),
    ] = 60.0,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Subjects are (seed, 0..N-1); the default, 50000, is far from every seed "
            "`edge-mer synth` and `edge-mer demo` train on."
        ),
    ] = None,
    fps: Annotated[float, typer.Option(help="Frame rate of the synthetic streams.")] = 200.0,
    spotter: Annotated[
        list[str] | None,
        typer.Option(
            help="[spotter] setting KEY=VALUE for this evaluation (repeatable), e.g. "
            "threshold_on=0.3; see `edge-mer validate-config`."
        ),
    ] = None,
    runner: Annotated[str, typer.Option(help="auto, onnxruntime or tensorrt.")] = "auto",
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder graph of the manifest (encoder, encoder_int8, ...; default: "
            "what `edge-mer run` picks here)."
        ),
    ] = None,
    iou: Annotated[float, typer.Option(help="IoU a match needs (MEGC: 0.5).")] = 0.5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    events_dir: Annotated[
        Path | None, typer.Option(help="Write each stream's events (JSONL) into this folder.")
    ] = None,
) -> None:
    """Score a bundle's spotting on synthetic streams of subjects it never saw, through the
    live pipeline of `edge-mer run`: micro-expression precision, recall and F1 (IoU >= 0.5,
    one match per ground-truth event, summed TP/FP/FN), false alarms per minute on
    distractor-only streams, and event latency."""
    from edge_mer.calibration.spot_streams import EVAL_SEED, synthetic_streams

    if json_out is not None and json_out.is_dir():
        raise InputError(f"--json {str(json_out)!r} is a folder; give a file name")
    settings = parse_settings(spotter)
    eval_seed = EVAL_SEED if seed is None else seed
    _refuse_training_subjects(bundle, eval_seed, subjects)
    streams = synthetic_streams(
        subjects=subjects,
        seconds=seconds,
        seed=eval_seed,
        fps=fps,
        distractor_seconds=distractor_seconds,
    )
    report = _evaluate(bundle, streams, settings, runner, encoder, iou, events_dir)
    _print(report)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1) + "\n")
        err_console.print(f"report written to {json_out}")


def _refuse_training_subjects(bundle: Path, seed: int, subjects: int) -> None:
    """Scoring a bundle on the people its spotter was chosen on (its training subjects)
    would measure nothing: refuse, naming them."""
    from edge_mer.bench.spot_tune import tuned_on_subjects
    from edge_mer.bundle import Bundle

    seen = tuned_on_subjects(Bundle.open(bundle, verify_hashes=False).manifest)
    both = sorted(seen & {(seed, i) for i in range(subjects)})
    if both:
        raise InputError(
            f"--seed {seed}: subjects {', '.join(f'({s}, {i})' for s, i in both[:4])} are "
            f"training subjects of {str(bundle)!r} (its spotter was chosen on their streams); "
            "score it on people it never saw: another --seed (default 50000)"
        )


def _evaluate(bundle, streams, settings, runner, encoder, iou, events_dir) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_mer.bench.spotting import evaluate_spotting

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} streams"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("spot-eval", total=len(streams))

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        report, _ = evaluate_spotting(
            bundle,
            streams,
            spotter=settings,
            runner=runner,
            encoder_graph=encoder,
            iou=iou,
            events_dir=events_dir,
            progress=progress,
        )
    return report


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    from edge_mer.bench.spotting_report import stream_rows, summary_lines

    b = report["bundle"]
    sp = report["spotter"]
    origin = report.get("spotter_origin") or {}
    from_bundle = [k for k, v in origin.items() if v == "bundle"]
    from_flags = [k for k, v in origin.items() if v == "config"]
    where = []
    if from_bundle:
        where.append(f"bundle manifest: {', '.join(from_bundle)}")
    if from_flags:
        where.append(f"--spotter: {', '.join(from_flags)}")
    console.print(
        f"[bold]spot-eval[/bold] {b['name']} ({report['runner']} "
        f"{report['encoder_graph'] or report['precision']}); spotter on "
        f"{sp['threshold_on']:g} / off {sp['threshold_off']:g}, smoothing "
        f"{sp['smoothing_frames']}, lag {report['lag_s'] * 1000:.0f} ms, min "
        f"{sp['min_duration_ms']} ms"
        + (
            f", macro veto {sp['macro_veto']:g} held {sp['hold_ms']} ms"
            if sp.get("macro_veto", 1.0) < 1.0
            else ""
        )
        + f" ({'; '.join(where) or 'built-in defaults'})"
    )
    head, rows = stream_rows(report)
    table = Table(box=None, pad_edge=False)
    for i, name in enumerate(head):
        table.add_column(name, no_wrap=True, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for line in summary_lines(report):
        console.print(line, markup=False)
