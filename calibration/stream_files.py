"""Coded streams on disk: long videos with their ground truth, for training on streams.

What ``edge-mer synth`` writes beside a dataset's clips (one continuous stream per training
subject) and what ``edge-mer train`` finds there::

    ROOT/streams/streams.csv          video, events, subject, seed, subject_index
    ROOT/streams/sub01.avi            the video, any fps (read and resampled by seconds)
    ROOT/streams/sub01.events.csv     kind, emotion, onset_frame, apex_frame, offset_frame,
                                      onset_s, apex_s, offset_s, aus

``kind`` is ``micro``, ``macro`` or ``blink``; times are seconds from the video's first
frame, and they are what the reader uses (the frame columns are for people). ``seed`` and
``subject_index`` name a synthetic subject (``make_subject(seed, index)``) and stay empty for
real videos: they let ``edge-mer spot-eval`` refuse to score a bundle on people it was
trained or tuned on. A long-video dataset (CAS(ME)^2, SAMM-LV) can be laid out the same
way: one video and one events file per video, listed in ``streams.csv``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.errors import DataError, InputError
from edge_mer.pipeline.preprocess import FramePreprocessor

__all__ = [
    "INDEX",
    "INDEX_COLUMNS",
    "KINDS",
    "STREAMS_DIR",
    "CodedEvent",
    "CodedStream",
    "find_streams",
    "read_events",
    "write_subject_streams",
]

STREAMS_DIR = "streams"
INDEX = "streams.csv"
INDEX_COLUMNS = ("video", "events", "subject", "seed", "subject_index")
KINDS = ("micro", "macro", "blink")
_NEEDED = ("kind", "emotion", "onset_s", "apex_s", "offset_s")


@dataclass(frozen=True)
class CodedEvent:
    """One coded interval of a stream, seconds from its first frame."""

    kind: str  # micro | macro | blink
    emotion: str  # as coded ("happiness", "disgust", ...); "" for a blink
    onset_s: float
    apex_s: float
    offset_s: float


@dataclass(frozen=True)
class CodedStream:
    """A video and its ground truth. ``synthetic``: ``(seed, subject_index)`` or None."""

    name: str
    video: Path
    events: tuple[CodedEvent, ...]
    subject: str
    synthetic: tuple[int, int] | None = None

    def load(self, pre: FramePreprocessor, fps: float) -> np.ndarray:
        """Every frame through ``pre``, resampled by seconds to ``fps`` (as clips are):
        uint8 ``[N, h, w, C]``, frame k shown at ``k / fps`` seconds."""
        from edge_mer.calibration.readers import _video_source

        return _video_source(self.video, self.video.parent, None).load(pre, fps=fps)


def read_events(path: Path) -> tuple[CodedEvent, ...]:
    """An ``events.csv`` (see the module docstring), sorted by onset; one-line
    :class:`DataError` naming the file, row and column for anything wrong."""
    if not path.is_file():
        raise DataError(f"stream events {str(path)!r} do not exist")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _NEEDED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{str(path)!r}: no column {missing[0]!r}; columns {_NEEDED} needed")
        for row_no, row in enumerate(reader, start=2):
            kind = (row["kind"] or "").strip()
            if kind not in KINDS:
                raise DataError(f"{str(path)!r} row {row_no}: kind {kind!r} is not one of {KINDS}")
            try:
                a, p, b = (float(row[k]) for k in ("onset_s", "apex_s", "offset_s"))
            except (TypeError, ValueError):
                raise DataError(
                    f"{str(path)!r} row {row_no}: onset_s, apex_s and offset_s must be seconds"
                ) from None
            if not (math.isfinite(a) and math.isfinite(b) and 0 <= a <= p <= b):
                raise DataError(
                    f"{str(path)!r} row {row_no}: need 0 <= onset_s <= apex_s <= offset_s, got "
                    f"{a:g}, {p:g}, {b:g}"
                )
            out.append(CodedEvent(kind, (row["emotion"] or "").strip(), a, p, b))
    return tuple(sorted(out, key=lambda e: e.onset_s))


def _int_or_none(text: str | None, where: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not an integer") from None


def find_streams(root: Path) -> list[CodedStream]:
    """The coded streams listed in ``root/streams/streams.csv`` ([] when ``root`` has no
    ``streams`` folder). Paths in the index are relative to it."""
    folder = Path(root) / STREAMS_DIR
    if not folder.is_dir():
        return []
    index = folder / INDEX
    if not index.is_file():
        raise DataError(
            f"{str(folder)!r} has no {INDEX}: list each video and its events file there "
            f"(columns {', '.join(INDEX_COLUMNS)})"
        )
    streams = []
    with open(index, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for col in ("video", "events", "subject"):
            if col not in (reader.fieldnames or []):
                raise DataError(f"{str(index)!r}: no column {col!r}")
        for row_no, row in enumerate(reader, start=2):
            where = f"{str(index)!r} row {row_no}"
            video = folder / row["video"]
            if not video.is_file():
                raise DataError(f"{where}: video {str(video)!r} does not exist")
            seed = _int_or_none(row.get("seed"), where)
            index_ = _int_or_none(row.get("subject_index"), where)
            streams.append(
                CodedStream(
                    video.stem,
                    video,
                    read_events(folder / row["events"]),
                    row["subject"].strip(),
                    (seed, index_) if seed is not None and index_ is not None else None,
                )
            )
    return streams


def write_subject_streams(
    root: Path,
    *,
    subjects: int,
    seconds: float,
    fps: float = 50.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    subject_names: list[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """One stream of ``seconds`` per synthetic subject ``(seed, 0..subjects-1)`` (the people
    of the casme2 layout's clips) into ``root/streams/``, with the index written last.
    ``progress(done, total, what)`` counts stream seconds. Returns a summary."""
    from edge_mer.calibration.synth_io import write_stream
    from edge_mer.calibration.synth_layouts import write_csv

    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"subject stream seconds={seconds!r}: must be > 0")
    names = subject_names or [f"{i + 1:02d}" for i in range(subjects)]
    folder = Path(root) / STREAMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    per = math.ceil(round(seconds * fps) / fps)
    rows, counts = [], {"micro": 0, "macro": 0, "blink": 0}
    for i in range(subjects):
        stem = f"sub{names[i]}"

        def tick(done: int, _total: int, what: str, i: int = i) -> None:
            if progress is not None:
                progress(i * per + done, subjects * per, f"stream sub{names[i]}: {what}")

        _, events = write_stream(
            folder / f"{stem}.avi",
            seconds=seconds,
            fps=fps,
            size=size,
            seed=seed,
            subject_index=i,
            progress=tick,
        )
        for e in read_events(events):
            counts[e.kind] += 1
        rows.append([f"{stem}.avi", events.name, names[i], seed, i])
    write_csv(folder / INDEX, INDEX_COLUMNS, rows)
    return {"root": str(folder), "streams": subjects, "seconds": seconds, "fps": fps, **counts}
