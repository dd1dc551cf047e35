"""``edge-mer synth``: write synthetic micro-expression clips (CASME II layout, videos, stream)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli.common import console, errors
from edge_mer.errors import InputError


@errors
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write (casme2/, videos/, stream.avi).")
    ],
    subjects: Annotated[int, typer.Option(help="Synthetic subjects (1-99).")] = 4,
    clips_per_emotion: Annotated[
        int, typer.Option(help="Clips per subject for each emotion (1-99).")
    ] = 3,
    fps: Annotated[
        float, typer.Option(help="Frame rate of the clips (>= 10; CASME II: 200).")
    ] = 200.0,
    size: Annotated[int, typer.Option(help="Frame height and width in pixels (>= 32).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same frames.")] = 0,
    videos: Annotated[
        bool, typer.Option(help="Also write one .avi per clip and videos/labels.csv.")
    ] = False,
    stream_seconds: Annotated[
        float,
        typer.Option(
            help="Also write a continuous stream.avi of this many seconds with its "
            "ground truth stream.events.csv (0: none)."
        ),
    ] = 0.0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty --out, replacing our files.")
    ] = False,
) -> None:
    """Write synthetic micro-expression clips for demos, INT8 calibration and tests."""
    _validate(out, subjects, clips_per_emotion, fps, size, seed, stream_seconds, force)
    from edge_mer.errors import require

    require("cv2", purpose="edge-mer synth", host=True)  # it writes the videos and images
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_mer.calibration.synth_io import synthesize

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("synth", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        summary = synthesize(
            out,
            subjects=subjects,
            clips_per_emotion=clips_per_emotion,
            fps=fps,
            size=(size, size),
            seed=seed,
            videos=videos,
            stream_seconds=stream_seconds,
            progress=progress,
        )
    counts = ", ".join(f"{k} {v}" for k, v in summary["emotions"].items())
    lines = [
        f"wrote {summary['clips']} clips ({counts}; {summary['frames']} frames, {fps:g} fps, "
        f"{size}x{size}) to {summary['casme2']}"
    ]
    if summary["videos"]:
        lines.append(f"wrote {summary['clips']} videos + labels.csv to {summary['videos']}")
    if summary["stream"]:
        n = summary["stream_event_counts"]
        lines.append(
            f"wrote {summary['stream']} ({stream_seconds:g} s, {n['micro']} micro, "
            f"{n['macro']} macro) and {summary['stream_events']}"
        )
    lines.append(f"done in {summary['elapsed_s']:.1f} s")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _validate(
    out: Path,
    subjects: int,
    clips_per_emotion: int,
    fps: float,
    size: int,
    seed: int,
    stream_seconds: float,
    force: bool,
) -> None:
    if not 1 <= subjects <= 99:
        raise InputError(f"--subjects {subjects}: must be between 1 and 99")
    if not 1 <= clips_per_emotion <= 99:
        raise InputError(f"--clips-per-emotion {clips_per_emotion}: must be between 1 and 99")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps {fps:g}: must be a positive number")
    if fps < 10:
        raise InputError(
            f"--fps {fps:g}: micro-expressions last 40-500 ms; use at least 10 fps "
            "(CASME II is 200)"
        )
    if size < 32:
        raise InputError(f"--size {size}: frames must be at least 32 pixels")
    if seed < 0:
        raise InputError(f"--seed {seed}: must be >= 0")
    if not (math.isfinite(stream_seconds) and stream_seconds >= 0):
        raise InputError(f"--stream-seconds {stream_seconds:g}: must be >= 0")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"--out {out}: directory is not empty; pass --force to write into it")
