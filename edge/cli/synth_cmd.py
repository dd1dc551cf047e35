"""``edge-mer synth``: synthetic micro-expression datasets in every layout, videos, a stream."""

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
        Path, typer.Option("--out", help="Directory to write (<layout>/, videos/, stream.avi).")
    ],
    layout: Annotated[
        list[str] | None,
        typer.Option(
            "--layout",
            help="Dataset layout to write, repeatable: casme2, samm, smic-hs, smic-vis, "
            "smic-nir (each with its own subjects, look and fps). Default: casme2.",
        ),
    ] = None,
    subjects: Annotated[int, typer.Option(help="Synthetic subjects (1-99).")] = 16,
    clips_per_emotion: Annotated[
        int, typer.Option(help="Clips per subject for each emotion (1-99).")
    ] = 3,
    fps: Annotated[
        float | None,
        typer.Option(
            help="Frame rate of every layout (>= 10). Default: each dataset's own (CASME II "
            "and SAMM 200, SMIC-HS 100, SMIC-VIS/NIR 25)."
        ),
    ] = None,
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
    subject_streams: Annotated[
        float,
        typer.Option(
            help="Also write one continuous stream of this many seconds per casme2 subject "
            "(neutral face, blinks, head drift, micro- and macro-expressions) with its ground "
            "truth into casme2/streams/: `edge-mer train` learns from them what a stream holds "
            "between micro-expressions (0: none)."
        ),
    ] = 60.0,
    subject_stream_fps: Annotated[
        float, typer.Option(help="Frame rate of those streams (the models' 50 fps by default).")
    ] = 50.0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty --out, replacing our files.")
    ] = False,
) -> None:
    """Write synthetic micro-expression datasets: demos, INT8 calibration, protocols, tests."""
    layouts = list(dict.fromkeys(layout or ["casme2"]))
    _validate(out, layouts, subjects, clips_per_emotion, fps, size, seed, stream_seconds, force)
    if not (math.isfinite(subject_streams) and subject_streams >= 0):
        raise InputError(f"--subject-streams {subject_streams:g}: must be >= 0 seconds")
    if subject_streams > 0 and not (math.isfinite(subject_stream_fps) and subject_stream_fps >= 10):
        raise InputError(f"--subject-stream-fps {subject_stream_fps:g}: use at least 10 fps")
    if subject_streams > 0 and "casme2" not in layouts:
        subject_streams = 0.0  # they go beside the casme2 clips, which train reads
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
            layouts=layouts,
            subjects=subjects,
            clips_per_emotion=clips_per_emotion,
            fps=fps,
            size=(size, size),
            seed=seed,
            videos=videos,
            stream_seconds=stream_seconds,
            subject_streams=subject_streams,
            subject_stream_fps=subject_stream_fps,
            progress=progress,
        )
    lines = []
    for written in summary["layouts"].values():
        counts = ", ".join(f"{k} {v}" for k, v in written["labels"].items())
        lines.append(
            f"wrote {written['layout']}: {written['clips']} clips ({counts}; {written['frames']} "
            f"frames, {written['fps']:g} fps, {size}x{size}) to {written['root']}"
        )
    if summary["videos"]:
        lines.append(f"wrote {summary['clips']} videos + labels.csv to {summary['videos']}")
    if summary["stream"]:
        n = summary["stream_event_counts"]
        lines.append(
            f"wrote {summary['stream']} ({stream_seconds:g} s, {n['micro']} micro, "
            f"{n['macro']} macro) and {summary['stream_events']}"
        )
    sub = summary.get("subject_streams")
    if sub:
        lines.append(
            f"wrote {sub['streams']} subject streams ({sub['seconds']:g} s each at "
            f"{sub['fps']:g} fps; {sub['micro']} micro, {sub['macro']} macro, {sub['blink']} "
            f"blinks) to {sub['root']}"
        )
    lines.append(f"done in {summary['elapsed_s']:.1f} s")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _validate(
    out: Path,
    layouts: list[str],
    subjects: int,
    clips_per_emotion: int,
    fps: float | None,
    size: int,
    seed: int,
    stream_seconds: float,
    force: bool,
) -> None:
    from edge_mer.calibration.synth_layouts import LAYOUTS

    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown:
        raise InputError(f"--layout {unknown[0]!r}: choose one of {', '.join(LAYOUTS)}")
    if not 1 <= subjects <= 99:
        raise InputError(f"--subjects {subjects}: must be between 1 and 99")
    if not 1 <= clips_per_emotion <= 99:
        raise InputError(f"--clips-per-emotion {clips_per_emotion}: must be between 1 and 99")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps {fps:g}: must be a positive number")
    if fps is not None and fps < 10:
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
