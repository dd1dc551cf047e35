"""Continuous synthetic streams: one subject, neutral face, blinks, head drift, noise, and
micro- and macro-expressions at random times, with their ground truth (deterministic by seed).

What the live pipeline's ``synthetic://`` source, ``edge-mer bench`` and ``edge-mer synth
--stream-seconds`` play. The faces and the events' shapes are :mod:`.synth`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from edge_mer.calibration.synth import (
    _REF_SIZE,
    _STREAM_SALT,
    EMOTIONS,
    SynthEvent,
    _check,
    _check_counts,
    _draw_event,
    _Scheduled,
    _Timeline,
    make_subject,
)
from edge_mer.errors import InputError

__all__ = ["generate_stream"]


def _schedule_stream(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    scale: float,
    micro_rate_hz: float,
    include_macro: bool,
) -> list[_Scheduled]:
    """Events separated by >= 0.5 s of neutral face, about ``micro_rate_hz`` micro per second."""
    events: list[_Scheduled] = []
    if micro_rate_hz <= 0:
        return events
    end = round(seconds * fps) - 1
    gap_mean = max(1.0 / micro_rate_hz - 0.5 - 0.27, 0.05)  # 0.27 s: mean micro duration
    t = round(rng.uniform(0.3, 0.8) * fps)
    since_macro = 0
    while True:
        # About one event in five is a macro-expression, and never more than four micro in a row.
        macro = include_macro and (rng.uniform() < 0.2 or since_macro >= 4)
        kind = "macro" if macro else "micro"
        since_macro = 0 if macro else since_macro + 1
        emotion = EMOTIONS[int(rng.integers(3))]
        sched = _draw_event(rng, kind, emotion, t, fps, scale)
        if sched.event.offset + round(0.3 * fps) > end:
            return events
        events.append(sched)
        t = sched.event.offset + math.ceil(0.5 * fps) + 1 + round(rng.exponential(gap_mean) * fps)


def _stream_timeline(
    seconds: float,
    fps: float,
    size: tuple[int, int],
    seed: int,
    subject_index: int,
    micro_rate_hz: float,
    include_macro: bool,
    micro: bool = True,
) -> _Timeline:
    h, w = _check(fps, size)
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"seconds={seconds!r}: must be > 0")
    _check_counts(1, 1, seed)
    if subject_index < 0:
        raise InputError(f"subject_index={subject_index!r}: must be >= 0")
    subject = make_subject(seed, subject_index)
    rng = np.random.default_rng([seed, subject_index, _STREAM_SALT])
    scale = min(h, w) / _REF_SIZE
    events = _schedule_stream(rng, seconds, fps, scale, micro_rate_hz, include_macro)
    frames = round(seconds * fps)
    # Blinks about every 4 s (people blink 10-20 times a minute), never inside an event, so
    # the ground truth stays clean.
    blinks = []
    busy = [(s.event.onset, s.event.offset) for s in events]
    t = rng.exponential(4.0) * fps
    while t < frames:
        length = rng.uniform(0.1, 0.3) * fps
        if not any(a - 1 <= t + length and t <= b + 1 for a, b in busy):
            blinks.append((float(t), float(length)))
        t += length + rng.exponential(4.0) * fps
    if not micro:
        # The same stream with its micro-expressions left out (their slots stay neutral):
        # blinks, head drift, noise and macro-expressions are drawn exactly as above.
        events = [s for s in events if s.event.kind != "micro"]
    return _Timeline(
        subject,
        (h, w),
        fps,
        frames,
        rng,
        distractors=True,
        head_px=rng.uniform(0.3, 2.0) * scale,
        blinks=blinks,
        events=events,
    )


def generate_stream(
    *,
    seconds: float,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    subject_index: int = 0,
    micro_rate_hz: float = 0.5,
    include_macro: bool = True,
    micro: bool = True,
    lazy: bool | None = None,
) -> tuple[Iterator[np.ndarray] | np.ndarray, list[SynthEvent]]:
    """A continuous stream of one subject: neutral face, blinks, head drift, noise, and
    events (about ``micro_rate_hz`` micro-expressions per second, 20% macro-expressions if
    ``include_macro``) separated by >= 0.5 s of neutral face.

    ``micro=False`` renders the same stream without its micro-expressions (their slots
    stay neutral; everything else, macro-expressions included, is frame for frame the
    same): a distractor-only stream for counting false alarms.

    Returns (frames, events). ``frames`` is an iterator of uint8 BGR [H, W, 3] frames if
    ``lazy`` (default: lazy when the stream would exceed 64 MiB), else a [T, H, W, 3] array;
    both iterate frame by frame and give the same bytes. ``round(seconds * fps)`` frames.
    """
    timeline = _stream_timeline(
        seconds, fps, size, seed, subject_index, micro_rate_hz, include_macro, micro
    )
    events = [s.event for s in timeline.events]
    h, w = timeline.size
    if lazy is None:
        lazy = timeline.frames * h * w * 3 > 64 * 2**20
    if lazy:
        return iter(timeline), events
    return np.stack(list(timeline)), events
