"""Synthetic clips and streams on disk: videos, streams, and what ``edge-mer synth`` writes.

Clips and streams come from :mod:`.synth` and :mod:`.synth_stream`; the datasets' layouts
(CASME II, SAMM, SMIC) are written by :mod:`.synth_layouts`. Every file is replaced
atomically (temp name + ``os.replace``), so a crash leaves no half file, and each label
sheet is written after the frames it describes.

- :func:`write_casme2`: ``CASME2-coding.csv`` + ``subNN/EPee_cc/imgN.jpg``, frame numbers
  1-based as CASME II has them (``img1.jpg`` is frame 1).
- :func:`write_videos`: one video per clip + ``labels.csv``, frames 0-based.
- :func:`write_stream`: one long video + ``<stem>.events.csv``, frames 0-based.
- :func:`synthesize`: what ``edge-mer synth --out DIR [--layout ...]`` does.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_mer.calibration.synth import (
    EMOTIONS,
    SynthClip,
    _check,
    _check_counts,
    _check_dataset,
    iter_clips,
)
from edge_mer.calibration.synth_layouts import (
    CASME2_COLUMNS,
    CASME2_SHEET,
    LAYOUTS,
    CasmeWriter,
    write_csv,
    write_layout,
)
from edge_mer.calibration.synth_stream import _stream_timeline
from edge_mer.errors import InputError

__all__ = [
    "CASME2_COLUMNS",
    "CASME2_SHEET",
    "EVENT_COLUMNS",
    "LABEL_COLUMNS",
    "synthesize",
    "write_casme2",
    "write_stream",
    "write_videos",
]

LABEL_COLUMNS = ("file", "subject", "emotion", "onset_frame", "apex_frame", "offset_frame", "fps")
EVENT_COLUMNS = (
    "kind",
    "emotion",
    "onset_frame",
    "apex_frame",
    "offset_frame",
    "onset_s",
    "apex_s",
    "offset_s",
    "aus",
)

Progress = Callable[[int, int, str], None]


def _open_writer(path: Path, fourcc: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    h, w = size
    if len(fourcc) != 4:
        raise InputError(f"fourcc={fourcc!r}: must be four characters, e.g. 'MJPG'")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise InputError(
            f"OpenCV cannot write {path.suffix!r} videos with fourcc {fourcc!r}; "
            "try fourcc 'MJPG' with '.avi'"
        )
    return writer


def _write_video(
    path: Path,
    frames: Iterator[np.ndarray] | np.ndarray,
    fourcc: str,
    fps: float,
    size: tuple[int, int],
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Write through a temp name with the same extension (OpenCV picks the container by it)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = _open_writer(tmp, fourcc, fps, size)
    n = 0
    try:
        for frame in frames:
            writer.write(frame)
            n += 1
            if on_frame is not None:
                on_frame(n)
    finally:
        writer.release()
    os.replace(tmp, path)
    return n


class _VideoSetWriter:
    """One video per clip plus labels.csv (0-based frames; 'others': 0, middle, last)."""

    def __init__(self, root: Path, fps: float, size: tuple[int, int], fourcc: str, ext: str):
        self.root, self.fps, self.size, self.fourcc = Path(root), fps, size, fourcc
        self.ext = ext if ext.startswith(".") else f".{ext}"
        self.rows: list[list[object]] = []
        self.root.mkdir(parents=True, exist_ok=True)

    def add(self, clip: SynthClip) -> None:
        name = f"sub{clip.subject}_{clip.name}{self.ext}"
        _write_video(self.root / name, clip.frames, self.fourcc, self.fps, self.size)
        last = len(clip.frames) - 1
        e = clip.event
        marks = (0, last // 2, last) if e is None else (e.onset, e.apex, e.offset)
        self.rows.append([name, clip.subject, clip.emotion, *marks, f"{self.fps:g}"])

    def finish(self) -> Path:
        write_csv(self.root / "labels.csv", LABEL_COLUMNS, self.rows)
        return self.root


def _clip_count(subjects: int, clips_per_emotion: int, emotions: Sequence[str]) -> int:
    return subjects * clips_per_emotion * len(emotions)


def _write_all(
    writer: CasmeWriter | _VideoSetWriter,
    what: Callable[[SynthClip], str],
    progress: Progress | None,
    *,
    subjects: int,
    clips_per_emotion: int,
    fps: float,
    size: tuple[int, int],
    seed: int,
    emotions: Sequence[str],
) -> Path:
    """Feed every clip of the dataset to ``writer``, report progress, finish the writer."""
    total = _clip_count(subjects, clips_per_emotion, emotions)
    clips = iter_clips(
        subjects=subjects,
        clips_per_emotion=clips_per_emotion,
        fps=fps,
        size=size,
        seed=seed,
        emotions=emotions,
    )
    for i, clip in enumerate(clips):
        if isinstance(writer, CasmeWriter):
            writer.add(0, 0, clip)
        else:
            writer.add(clip)
        if progress is not None:
            progress(i + 1, total, what(clip))
    return writer.finish()


def write_casme2(
    out_dir: Path | str,
    *,
    subjects: int = 4,
    clips_per_emotion: int = 3,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    emotions: Sequence[str] = EMOTIONS,
    progress: Progress | None = None,
) -> Path:
    """Write a synthetic dataset in the CASME II layout under ``out_dir``; returns it.

    ``out_dir/CASME2-coding.csv`` (Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame,
    Action Units, Estimated Emotion; written last, atomically), ``out_dir/README.txt`` and
    ``out_dir/subNN/EPee_cc/img1.jpg..imgN.jpg`` (JPEG quality 95, frame numbers 1-based).
    """
    _check_dataset(subjects, clips_per_emotion, fps, size, seed, emotions)
    writer = CasmeWriter(LAYOUTS["casme2"], Path(out_dir), fps, tuple(size), seed)
    return _write_all(
        writer,
        lambda c: f"casme2 sub{c.subject}/{c.name}",
        progress,
        subjects=subjects,
        clips_per_emotion=clips_per_emotion,
        fps=fps,
        size=size,
        seed=seed,
        emotions=emotions,
    )


def write_videos(
    out_dir: Path | str,
    *,
    subjects: int = 4,
    clips_per_emotion: int = 3,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    emotions: Sequence[str] = EMOTIONS,
    fourcc: str = "MJPG",
    ext: str = ".avi",
    progress: Progress | None = None,
) -> Path:
    """Write one video per clip (``subNN_EPee_cc.avi``) and ``labels.csv`` (file, subject,
    emotion, onset_frame, apex_frame, offset_frame, fps; frames 0-based) under ``out_dir``.
    The clips are the same as :func:`write_casme2` writes for the same arguments."""
    _check_dataset(subjects, clips_per_emotion, fps, size, seed, emotions)
    writer = _VideoSetWriter(Path(out_dir), fps, tuple(size), fourcc, ext)  # type: ignore[arg-type]
    return _write_all(
        writer,
        lambda c: f"video sub{c.subject}_{c.name}",
        progress,
        subjects=subjects,
        clips_per_emotion=clips_per_emotion,
        fps=fps,
        size=size,
        seed=seed,
        emotions=emotions,
    )


def write_stream(
    path: Path | str,
    *,
    seconds: float,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    subject_index: int = 0,
    micro_rate_hz: float = 0.5,
    include_macro: bool = True,
    fourcc: str = "MJPG",
    progress: Progress | None = None,
) -> tuple[Path, Path]:
    """Write :func:`generate_stream` to a video at ``path`` and its ground truth beside it,
    ``<stem>.events.csv`` (kind, emotion, onset_frame, apex_frame, offset_frame, onset_s,
    apex_s, offset_s, aus; frames 0-based; one row per micro- or macro-expression and per
    blink, kind ``blink``, AU45, by onset). Frames are rendered as they are written."""
    path = Path(path)
    timeline = _stream_timeline(
        seconds, fps, size, seed, subject_index, micro_rate_hz, include_macro
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    total_s = math.ceil(timeline.frames / fps)
    fps_int = max(round(fps), 1)

    def tick(n: int) -> None:
        if progress is not None and (n % fps_int == 0 or n == timeline.frames):
            progress(math.ceil(n / fps), total_s, f"stream {n / fps:.0f}/{seconds:g} s")

    _write_video(path, iter(timeline), fourcc, fps, timeline.size, tick)
    rows = [
        [
            e.kind,
            e.emotion,
            e.onset,
            e.apex,
            e.offset,
            f"{e.onset_s:.6f}",
            f"{e.apex_s:.6f}",
            f"{e.offset_s:.6f}",
            e.aus,
        ]
        for e in (s.event for s in timeline.events)
    ]
    for start, length in timeline.blinks:  # AU45; eyes fully closed at 35 % of the blink
        a, p, b = math.floor(start), round(start + 0.35 * length), math.ceil(start + length)
        rows.append(["blink", "", a, p, b, *(f"{v / fps:.6f}" for v in (a, p, b)), "45"])
    rows.sort(key=lambda r: int(r[2]))
    events_path = path.with_name(f"{path.stem}.events.csv")
    write_csv(events_path, EVENT_COLUMNS, rows)
    return path, events_path


def synthesize(
    out: Path | str,
    *,
    layouts: Sequence[str] = ("casme2",),
    subjects: int = 4,
    clips_per_emotion: int = 3,
    fps: float | None = None,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    videos: bool = False,
    stream_seconds: float = 0.0,
    subject_streams: float = 0.0,
    subject_stream_fps: float = 50.0,
    progress: Progress | None = None,
) -> dict:
    """What ``edge-mer synth --out DIR`` does: ``DIR/<layout>/`` for each of ``layouts``
    (:data:`~.synth_layouts.LAYOUTS`; each at its dataset's fps unless ``fps`` is given),
    ``DIR/videos/`` if ``videos`` (the casme2 clips, rendered once), ``DIR/stream.avi`` +
    ``stream.events.csv`` if ``stream_seconds > 0`` (at ``fps`` or 200), and with
    ``subject_streams > 0`` one stream of that many seconds per casme2 subject, at
    ``subject_stream_fps``, in ``DIR/casme2/streams/`` (:mod:`.stream_files`: what
    ``edge-mer train`` learns the background from). Files it writes are replaced; others in
    DIR are left alone.

    ``progress(done, total, what)`` counts clips, plus one unit per stream second. Returns a
    summary: ``layouts`` (one :func:`~.synth_layouts.write_layout` summary each), and for the
    casme2 clips ``casme2`` (path or None), ``clips``, ``frames``, ``emotions``, ``fps``;
    ``videos``, ``stream`` paths (or None), size, seed, elapsed seconds.
    """
    start = time.perf_counter()
    out = Path(out)
    size = tuple(int(v) for v in size)  # type: ignore[assignment]
    unknown = [name for name in layouts if name not in LAYOUTS]
    if unknown or not layouts:
        raise InputError(f"layouts {list(layouts)!r}: choose from {', '.join(LAYOUTS)}")
    base_fps = LAYOUTS["casme2"].fps if fps is None else fps
    for name in layouts:
        _check(LAYOUTS[name].fps if fps is None else fps, size)
    _check_counts(subjects, clips_per_emotion, seed)
    if not (math.isfinite(stream_seconds) and stream_seconds >= 0):
        raise InputError(f"stream_seconds={stream_seconds!r}: must be >= 0")
    if not (math.isfinite(subject_streams) and subject_streams >= 0):
        raise InputError(f"subject_streams={subject_streams!r}: must be >= 0 seconds")
    if subject_streams > 0:
        _check(subject_stream_fps, size)
        if "casme2" not in layouts:
            raise InputError("subject streams go beside the casme2 clips: add the casme2 layout")
    per_layout = {
        name: subjects * clips_per_emotion * len(LAYOUTS[name].emotions) for name in layouts
    }
    n_casme = _clip_count(subjects, clips_per_emotion, EMOTIONS)
    n_clips = sum(per_layout.values()) + (n_casme if videos and "casme2" not in layouts else 0)
    stream_units = (
        math.ceil(round(stream_seconds * base_fps) / base_fps) if stream_seconds > 0 else 0
    )
    per_subject = round(subject_streams * subject_stream_fps) / subject_stream_fps
    subject_units = subjects * math.ceil(per_subject) if subject_streams > 0 else 0
    total = n_clips + stream_units + subject_units
    out.mkdir(parents=True, exist_ok=True)
    vids = _VideoSetWriter(out / "videos", base_fps, size, "MJPG", ".avi") if videos else None  # type: ignore[arg-type]
    done = 0

    def tick(_done: int, _total: int, what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, what)

    summary: dict = {"out": str(out), "layouts": {}, "casme2": None, "clips": 0, "frames": 0}
    for name in layouts:
        also = vids.add if (vids is not None and name == "casme2") else None
        written = write_layout(
            name,
            out / name,
            subjects=subjects,
            clips_per_emotion=clips_per_emotion,
            fps=fps,
            size=size,  # type: ignore[arg-type]
            seed=seed,
            progress=tick,
            also=also,
        )
        summary["layouts"][name] = written
    if vids is not None and "casme2" not in layouts:
        for clip in iter_clips(
            subjects=subjects,
            clips_per_emotion=clips_per_emotion,
            fps=base_fps,
            size=size,
            seed=seed,
        ):
            vids.add(clip)
            tick(0, 0, f"video sub{clip.subject}/{clip.name}")
    casme = summary["layouts"].get("casme2")
    summary.update(
        casme2=casme["root"] if casme else None,
        clips=casme["clips"] if casme else 0,
        frames=casme["frames"] if casme else 0,
        emotions=casme["labels"] if casme else {},
        subjects=subjects,
        fps=float(base_fps),
        size=list(size),
        seed=seed,
        videos=str(vids.finish()) if vids is not None else None,
        stream=None,
        stream_events=None,
        stream_event_counts=None,
    )
    if stream_seconds > 0:
        video, events = write_stream(
            out / "stream.avi",
            seconds=stream_seconds,
            fps=base_fps,
            size=size,  # type: ignore[arg-type]
            seed=seed,
            progress=lambda d, _t, what: progress(n_clips + d, total, what) if progress else None,
        )
        with open(events, newline="", encoding="utf-8") as f:
            kinds = [row["kind"] for row in csv.DictReader(f)]
        summary.update(
            stream=str(video),
            stream_events=str(events),
            stream_event_counts={"micro": kinds.count("micro"), "macro": kinds.count("macro")},
        )
    summary["subject_streams"] = None
    if subject_streams > 0:
        from edge_mer.calibration.stream_files import write_subject_streams

        offset = n_clips + stream_units
        summary["subject_streams"] = write_subject_streams(
            out / "casme2",
            subjects=subjects,
            seconds=subject_streams,
            fps=subject_stream_fps,
            size=size,  # type: ignore[arg-type]
            seed=seed,
            progress=lambda d, _t, what: progress(offset + d, total, what) if progress else None,
        )
    summary["elapsed_s"] = round(time.perf_counter() - start, 3)
    return summary
