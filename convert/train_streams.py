"""Training on streams: what a stream holds between micro-expressions becomes the background.

A clip teaches "this emotion vs the *others* clip"; a continuous stream of the same subject
teaches "this window vs everything else a face does" at the model's own window alignment:
the neutral face, blinks, head drift, macro-expressions, and windows that straddle an
event's edges. :class:`TrainStream` is one such stream in memory (frames at the model's
fps, events as frame indices); :func:`load_streams` reads them from ``ROOT/streams/``
(:mod:`edge_mer.calibration.stream_files`, what ``edge-mer synth`` writes).

Labels, for the window of T frames ending at frame ``e`` (lag ``L = T // 4``), per
micro-expression with an emotion the model knows:

- the emotion for ``onset + max(1, (apex - onset) // 2) <= e <= offset + L`` (the face is
  well into the motion, up to a quarter window after it ended: what the spotter is dated
  back by);
- left out: windows touching it that end before that run, and the 2 after it;
- background for every other window: neutral face, blinks, head drift, macro-expressions
  (they are not micro-expressions), and windows that still hold a micro-expression that
  ended more than L frames ago (so events close on time).

With a ``macro`` label among the model's labels (:data:`~edge_mer.pipeline.spotter.
MACRO_LABEL`), the windows touching a macro-expression from half-way up its rise on carry it
(the earlier ones, which look like a micro-expression's start, are left out), and its
stage-1 pairs are taken like a micro-expression's: the spotter counts ``macro`` as
background and vetoes micro events that go on into a macro-expression.

Every background window that touches an event or a blink is kept (the hard ones); the
plain neutral ones are sampled, up to ``bg_ratio`` per positive window of the stream.
Stage 1 pairs: for each micro-expression, (a frame of the T - 1 before its onset, a frame
within 2 of its apex) with its emotion; as many background pairs ``(a, b)``, ``1 <= b - a
< T``, that touch no micro-expression (they may hold blinks, drift, macro-expressions).
This is the recipe measured in ``docs/spotting.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.errors import DataError
from edge_mer.pipeline.spotter import MACRO_LABEL

__all__ = [
    "IGNORE",
    "StreamEvent",
    "TrainStream",
    "load_streams",
    "stream_pairs",
    "stream_windows",
    "window_labels",
]

IGNORE = -1


@dataclass(frozen=True)
class StreamEvent:
    """One coded interval, frame indices at the model's fps (inclusive)."""

    kind: str  # "micro" | "macro" | "blink"
    label: str | None  # the model's label for a micro-expression (None: unknown to it)
    onset: int
    apex: int
    offset: int


@dataclass
class TrainStream:
    """A continuous stream of one subject, in memory.

    Attributes:
        frames: uint8 ``[N, H, W, C]`` at the model's fps, height, width and channels.
        events: its micro- and macro-expressions and blinks (:class:`StreamEvent`).
        subject: the subject id; ``synthetic``: ``(seed, index)`` of a synthetic subject.
        fps: the frames' rate (the model's); ``name``: for the record.
    """

    frames: np.ndarray
    events: list[StreamEvent] = field(default_factory=list)
    subject: str = ""
    name: str = ""
    fps: float = 0.0
    synthetic: tuple[int, int] | None = None


def check_streams(streams: Sequence[TrainStream], labels: list[str], spec: dict) -> None:
    """Refuse streams whose frames or labels do not fit the model, in one line."""
    shape = (spec["height"], spec["width"], spec["channels"])
    for i, s in enumerate(streams):
        name = s.name or f"training stream {i}"
        f = s.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4:
            raise DataError(f"{name}: frames must be a uint8 array [N, H, W, C]")
        if tuple(f.shape[1:]) != shape:
            raise DataError(
                f"{name}: frames {tuple(f.shape)} do not match the model input [N, {shape[0]}, "
                f"{shape[1]}, {shape[2]}]: resize and convert them first"
            )
        for e in s.events:
            if e.label is not None and e.label not in labels:
                raise DataError(f"{name}: label {e.label!r} is not one of the model's {labels}")
            if not 0 <= e.onset <= e.apex <= e.offset:
                raise DataError(f"{name}: event frames {e.onset}, {e.apex}, {e.offset} unordered")


def window_labels(stream: TrainStream, labels: list[str], t: int, lag: int, bg: int) -> np.ndarray:
    """Per window end ``e`` (index into the frames): its label index, :data:`IGNORE` for
    ``e < t - 1`` and for the windows left out (see the module docstring)."""
    n = len(stream.frames)
    y = np.full(n, bg, np.int64)
    e = np.arange(n)
    start = e - t + 1
    macro = labels.index(MACRO_LABEL) if MACRO_LABEL in labels else None
    for ev in stream.events:
        touch = (start <= ev.offset) & (e >= ev.onset)
        if ev.kind == "macro" and macro is not None:
            late = e >= ev.onset + max(1, (ev.apex - ev.onset) // 2)
            y[touch & late] = macro
            y[touch & ~late] = IGNORE
            continue
        if ev.kind != "micro":
            continue
        if ev.label is None:  # an emotion the model has no class for: neither it nor none
            y[touch] = IGNORE
            continue
        first = ev.onset + max(1, (ev.apex - ev.onset) // 2)
        last = ev.offset + lag
        y[touch & (((e >= ev.onset) & (e < first)) | ((e > last) & (e <= last + 2)))] = IGNORE
        y[(e >= first) & (e <= last)] = labels.index(ev.label)
    y[: t - 1] = IGNORE
    return y


def _touching(stream: TrainStream, t: int) -> np.ndarray:
    """Per window end: does the window touch any coded interval (event or blink)?"""
    e = np.arange(len(stream.frames))
    hard = np.zeros(len(e), bool)
    for ev in stream.events:
        hard |= (e - t + 1 <= ev.offset) & (e >= ev.onset)
    return hard


def stream_windows(
    streams: Sequence[TrainStream],
    labels: list[str],
    t: int,
    bg: int,
    rng: np.random.Generator,
    *,
    first_index: int = 0,
    bg_ratio: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 windows as ``(sequence, last frame)`` rows ``[M, 2]`` (sequence numbers from
    ``first_index``) and their labels ``[M]``: every positive and hard background window,
    plain background windows sampled up to ``bg_ratio`` per positive (at least 8)."""
    lag = t // 4
    rows, ys = [], []
    for si, s in enumerate(streams):
        y = window_labels(s, labels, t, lag, bg)
        pos = np.flatnonzero((y >= 0) & (y != bg))
        back = np.flatnonzero(y == bg)
        hard = back[_touching(s, t)[back]]
        rest = np.setdiff1d(back, hard)
        k = min(len(rest), max(math.ceil(bg_ratio * len(pos)) - len(hard), 8))
        picked = rng.choice(rest, size=k, replace=False) if k else rest[:0]
        ends = np.sort(np.concatenate([pos, hard, picked]))
        rows.append(np.stack([np.full(len(ends), first_index + si), ends], axis=1))
        ys.append(y[ends])
    if not rows:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(ys).astype(np.int64)


def stream_pairs(
    streams: Sequence[TrainStream],
    labels: list[str],
    t: int,
    bg: int | None,
    rng: np.random.Generator,
    per_event: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-1 frame pairs ``[M, 2, H, W, C]`` and labels (see the module docstring)."""
    xs, ys = [], []
    macro = labels.index(MACRO_LABEL) if MACRO_LABEL in labels else None
    for s in streams:
        n = len(s.frames)
        busy = np.zeros(n, bool)
        micro = [ev for ev in s.events if ev.kind == "micro"]
        learnt = micro + [ev for ev in s.events if ev.kind == "macro" and macro is not None]
        for ev in learnt:
            busy[max(0, ev.onset - 1) : ev.offset + 2] = True
            label = macro if ev.kind == "macro" else None
            if label is None and ev.label is None:
                continue
            label = labels.index(ev.label) if label is None else label
            lo = max(0, ev.onset - t + 1)
            hi = max(lo + 1, ev.onset)
            for _ in range(per_event):
                r = int(rng.integers(lo, hi))
                a = int(np.clip(ev.apex + rng.integers(-2, 3), ev.onset, n - 1))
                xs.append(s.frames[[r, a]])
                ys.append(label)
        if bg is None:
            continue
        free = np.flatnonzero(~busy)
        if len(free) < 2:
            continue
        for _ in range(max(per_event, per_event * len(micro))):
            b = int(rng.choice(free))
            a = b - int(rng.integers(1, t))
            if a < 0 or busy[a : b + 1].any():
                continue
            xs.append(s.frames[[a, b]])
            ys.append(bg)
    if not xs:
        shape = (0, 2, *streams[0].frames.shape[1:]) if streams else (0, 2, 1, 1, 1)
        return np.zeros(shape, np.uint8), np.zeros(0, np.int64)
    return np.stack(xs), np.asarray(ys, np.int64)


def load_streams(
    root: Path,
    spec: dict[str, Any],
    labels: list[str],
    label_map: dict[str, str],
    say: Callable[[str], None],
) -> list[TrainStream]:
    """The coded streams of ``root/streams/`` ([] if there are none), preprocessed as the
    device does and resampled by seconds to the model's fps; emotions mapped with
    ``label_map`` (an emotion that maps to no label is left out of training, not
    background)."""
    from edge_mer.calibration.stream_files import find_streams
    from edge_mer.pipeline.preprocess import FramePreprocessor

    coded = find_streams(Path(root))
    if not coded:
        return []
    fps = float(spec["fps"])
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    out = []
    for i, c in enumerate(coded):
        frames = c.load(pre, fps)
        n = len(frames)

        def at(seconds: float, n: int = n) -> int:
            return min(n - 1, max(0, round(seconds * fps)))

        events = []
        for e in c.events:
            label = None
            if e.kind == "micro":
                name = label_map.get(e.emotion, e.emotion)
                label = name if name in labels else None
            events.append(StreamEvent(e.kind, label, at(e.onset_s), at(e.apex_s), at(e.offset_s)))
        out.append(TrainStream(frames, events, c.subject, c.name, fps, c.synthetic))
        say(f"loaded stream {i + 1}/{len(coded)}: {c.name} ({n} frames at {fps:g} fps)")
    return out
