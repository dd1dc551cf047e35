"""Synthetic micro-expression clips, datasets and streams, deterministic by seed.

The real MER datasets are licence-gated, so the demo, INT8 calibration, the tests and the
live pipeline's smoke runs use these. Each clip is a procedural face (:mod:`.faces`) that
holds still, makes one brief action-unit motion with an onset -> apex -> offset profile,
and goes back to neutral; blinks, a slight head drift and sensor noise are the
distractors, and in streams so are macro-expressions (the same motions, > 0.5 s, larger).

=========  ==============  ===========================================================
emotion    action units    motion
=========  ==============  ===========================================================
happiness  12              lip corners up and out
disgust    4+9             inner brows down and together, nose and upper lip raised,
                           glabella and nose wrinkles darken
surprise   1+2+26          brows up, jaw drops (mouth opens)
others     (none)          distractors only
=========  ==============  ===========================================================

Frames are uint8 BGR [H, W, 3] (OpenCV order). Frame indices in :class:`SynthEvent` are
0-based. Same arguments, same seed: byte-identical frames. Writing clips and streams to disk
(CASME II layout, videos, ``edge-mer synth``) is :mod:`.synth_io`'s job.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edge_mer.calibration.face_render import render_face
from edge_mer.calibration.faces import FaceState, Subject, make_subject
from edge_mer.errors import InputError

__all__ = [
    "EMOTIONS",
    "EMOTION_AUS",
    "SynthClip",
    "SynthEvent",
    "generate_stream",
    "iter_clips",
    "make_subject",
    "render_clip",
]

EMOTIONS = ("happiness", "disgust", "surprise", "others")
EMOTION_AUS = {"happiness": "12", "disgust": "4+9", "surprise": "1+2+26", "others": ""}
MICRO_S = (0.04, 0.5)  # a micro-expression lasts 40-500 ms
MACRO_S = (0.6, 1.6)
MIN_FPS = 10.0  # below this a 0.5 s micro-expression has too few frames for onset < apex < offset
_CLIP_SALT, _STREAM_SALT = 0xC11F, 0x57EA
_REF_SIZE = 128.0  # amplitudes are given in pixels at a 128 px face crop and scale with size


@dataclass(frozen=True)
class SynthEvent:
    """One expression. Frames are 0-based indices into the clip or stream, inclusive;
    times are those frames divided by fps. ``aus`` is e.g. "12", "4+9", "1+2+26"."""

    kind: str  # "micro" | "macro"
    emotion: str
    onset: int
    apex: int
    offset: int
    onset_s: float
    apex_s: float
    offset_s: float
    aus: str
    amplitude_px: float = 0.0

    @property
    def duration_s(self) -> float:
        """Onset to offset, seconds."""
        return self.offset_s - self.onset_s


@dataclass
class SynthClip:
    """One rendered clip. ``frames`` is uint8 BGR [T, H, W, 3], owned by the clip."""

    subject: str
    name: str
    fps: float
    frames: np.ndarray
    event: SynthEvent | None  # None for "others"
    emotion: str


@dataclass(frozen=True)
class _Scheduled:
    """An event with the private shape of its intensity profile (frame positions)."""

    event: SynthEvent
    rise_end: float
    fall_start: float
    aus: tuple[str, ...]

    def intensity(self, frame: float) -> float:
        e = self.event
        if frame <= e.onset or frame >= e.offset:
            return 0.0
        if frame < self.rise_end:
            return _smoother((frame - e.onset) / (self.rise_end - e.onset))
        if frame > self.fall_start:
            return _smoother((e.offset - frame) / (e.offset - self.fall_start))
        return 1.0


def _smoother(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * u * (u * (6.0 * u - 15.0) + 10.0)


class _Timeline:
    """Everything that moves in a clip or stream, evaluated per frame (cheap, lazy)."""

    def __init__(
        self,
        subject: Subject,
        size: tuple[int, int],
        fps: float,
        frames: int,
        rng: np.random.Generator,
        *,
        distractors: bool,
        head_px: float,
        blinks: Sequence[tuple[float, float]] = (),
        events: Sequence[_Scheduled] = (),
    ):
        self.subject, self.size, self.fps, self.frames = subject, size, fps, frames
        self.events = sorted(events, key=lambda s: s.event.onset)
        self._onsets = [s.event.onset for s in self.events]
        self.blinks = sorted(blinks)  # (start frame, length in frames)
        self._blink_starts = [b[0] for b in self.blinks]
        self.noise = subject.noise_sigma if distractors else 0.0
        self.rng = rng
        # Head drift: smooth (cosine-interpolated) random offsets every 0.2-0.4 s, bounded.
        step = max(fps * float(rng.uniform(0.2, 0.4)), 1.0)
        n = int(frames / step) + 2
        self._knot_step = step
        self._knots = rng.uniform(-head_px, head_px, (n, 2)) if distractors else np.zeros((n, 2))

    def state(self, t: int) -> FaceState:
        aus: dict[str, float] = {}
        amplitude = 0.0
        i = bisect.bisect_right(self._onsets, t) - 1
        if i >= 0:
            sched = self.events[i]
            level = sched.intensity(t)
            if level > 0.0:
                aus = dict.fromkeys(sched.aus, level)
                amplitude = sched.event.amplitude_px
        eye_open = 1.0
        j = bisect.bisect_right(self._blink_starts, t) - 1
        if j >= 0:
            start, length = self.blinks[j]
            u = (t - start) / length
            if 0.0 < u < 1.0:  # fast close (35%), slower reopening
                closed = _smoother(u / 0.35) if u < 0.35 else _smoother((1.0 - u) / 0.65)
                eye_open = 1.0 - closed
        k = t / self._knot_step
        k0 = int(k)
        f = 0.5 - 0.5 * math.cos(math.pi * (k - k0))
        dx, dy = self._knots[k0] * (1.0 - f) + self._knots[k0 + 1] * f
        return FaceState(aus, amplitude, eye_open, (float(dx), float(dy)))

    def frame(self, t: int) -> np.ndarray:
        img = render_face(self.subject, self.size, self.state(t))
        if self.noise > 0.0:
            img += self.rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise)
        np.clip(img, 0.0, 255.0, out=img)
        return np.rint(img).astype(np.uint8)

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self.frames):
            yield self.frame(t)


def _check(fps: float, size: tuple[int, int], amplitude: float = 1.0) -> tuple[int, int]:
    if not (isinstance(fps, (int, float, np.number)) and math.isfinite(fps) and fps >= MIN_FPS):
        raise InputError(
            f"fps={fps!r}: need at least {MIN_FPS:g} fps to resolve a 40-500 ms "
            "micro-expression into onset, apex and offset frames"
        )
    h, w = (int(v) for v in size)
    if h < 32 or w < 32:
        raise InputError(f"size={tuple(size)!r}: frames must be at least 32x32 (height, width)")
    if not (math.isfinite(amplitude) and amplitude > 0):
        raise InputError(f"amplitude={amplitude!r}: must be a positive scale factor")
    return h, w


def _check_emotion(emotion: str) -> None:
    if emotion not in EMOTIONS:
        raise InputError(f"emotion {emotion!r} is not one of {', '.join(EMOTIONS)}")


def _draw_event(
    rng: np.random.Generator, kind: str, emotion: str, onset: int, fps: float, scale: float
) -> _Scheduled:
    """Draw an event starting at frame ``onset``; ``scale`` turns reference px into px."""
    if kind == "micro":
        # (offset - onset) / fps >= 40 ms and (offset - onset + 1) / fps <= 500 ms, so the
        # duration is in range whichever of the two conventions a reader uses.
        lo = max(math.ceil(MICRO_S[0] * fps - 1e-9), 2)
        hi = math.floor(MICRO_S[1] * fps + 1e-9) - 1
        n = int(np.clip(round(rng.uniform(*MICRO_S) * fps), lo, hi))
        amplitude = rng.uniform(2.0, 4.0) * scale
    elif kind == "macro":
        n = max(round(rng.uniform(*MACRO_S) * fps), math.floor(MICRO_S[1] * fps) + 1)
        amplitude = rng.uniform(5.0, 8.0) * scale
    else:
        raise InputError(f"event kind {kind!r} is not 'micro' or 'macro'")
    apex = onset + int(np.clip(round(n * rng.uniform(0.3, 0.6)), 1, n - 1))
    offset = onset + n
    # Hold near the apex for up to a quarter of each ramp; intensity is exactly 1 at apex.
    rise_end = apex - rng.uniform(0.0, 0.25) * (apex - onset)
    fall_start = apex + rng.uniform(0.0, 0.25) * (offset - apex)
    aus = EMOTION_AUS[emotion]
    event = SynthEvent(
        kind,
        emotion,
        onset,
        apex,
        offset,
        onset / fps,
        apex / fps,
        offset / fps,
        aus,
        float(amplitude),
    )
    return _Scheduled(event, rise_end, fall_start, tuple(aus.split("+")))


def render_clip(
    subject: Subject,
    emotion: str,
    *,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    lead_s: tuple[float, float] = (0.15, 0.3),
    trail_s: tuple[float, float] = (0.1, 0.2),
    rng: np.random.Generator | int | None = None,
    kind: str = "micro",
    amplitude: float = 1.0,
    distractors: bool = True,
    name: str | None = None,
) -> SynthClip:
    """One clip: neutral lead-in (length drawn from ``lead_s`` seconds), the event, a
    neutral tail (``trail_s``), with blinks, head drift and sensor noise sprinkled in
    (``distractors=False`` renders a clean clip). ``emotion="others"`` has no event: only
    distractors, over a clip of the same length distribution. ``kind="macro"`` makes the
    event a macro-expression. ``amplitude`` scales the motion (1.0: 2-4 px at 128 px).
    ``rng`` is a Generator or a seed; None means seed 0.
    """
    _check_emotion(emotion)
    h, w = _check(fps, size, amplitude)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    scale = amplitude * min(h, w) / _REF_SIZE
    lead = max(round(rng.uniform(*lead_s) * fps), 1)
    events: list[_Scheduled] = []
    if emotion == "others":
        end = lead + max(round(rng.uniform(*MICRO_S) * fps), 2)
    else:
        events.append(_draw_event(rng, kind, emotion, lead, fps, scale))
        end = events[0].event.offset
    frames = end + 1 + max(round(rng.uniform(*trail_s) * fps), 1)
    blinks = []
    if distractors and rng.uniform() < (0.85 if emotion == "others" else 0.4):
        length = rng.uniform(0.1, 0.3) * fps
        blinks.append((float(rng.uniform(0, max(frames - length, 1))), length))
    head_px = rng.uniform(0.5, 2.0) if emotion == "others" else rng.uniform(0.1, 1.0)
    timeline = _Timeline(
        subject,
        (h, w),
        fps,
        frames,
        rng,
        distractors=distractors,
        head_px=head_px * min(h, w) / _REF_SIZE,
        blinks=blinks,
        events=events,
    )
    return SynthClip(
        subject=subject.id,
        name=name if name is not None else emotion,
        fps=float(fps),
        frames=np.stack(list(timeline)),
        event=events[0].event if events else None,
        emotion=emotion,
    )


def iter_clips(
    *,
    subjects: int = 4,
    clips_per_emotion: int = 3,
    fps: float = 200.0,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    emotions: Sequence[str] = EMOTIONS,
) -> Iterator[SynthClip]:
    """The clips of a synthetic dataset, subject by subject, named ``EP<ee>_<cc>`` (ee: the
    emotion's position in :data:`EMOTIONS` + 1, cc: clip number). A clip depends only on
    (seed, subject, emotion, clip number), not on how many others are asked for."""
    _check_dataset(subjects, clips_per_emotion, fps, size, seed, emotions)
    return _clips(subjects, clips_per_emotion, fps, size, seed, emotions)


def _clips(subjects, clips_per_emotion, fps, size, seed, emotions) -> Iterator[SynthClip]:
    for si in range(subjects):
        subject = make_subject(seed, si)
        for emotion in emotions:
            ei = EMOTIONS.index(emotion)
            for k in range(clips_per_emotion):
                rng = np.random.default_rng([seed, si, ei, k, _CLIP_SALT])
                yield render_clip(
                    subject,
                    emotion,
                    fps=fps,
                    size=size,
                    rng=rng,
                    name=f"EP{ei + 1:02d}_{k + 1:02d}",
                )


def _check_dataset(subjects, clips_per_emotion, fps, size, seed, emotions) -> None:
    _check_counts(subjects, clips_per_emotion, seed)
    for e in emotions:
        _check_emotion(e)
    _check(fps, size)


def _check_counts(subjects: int, clips_per_emotion: int, seed: int) -> None:
    if subjects < 1 or subjects > 99:
        raise InputError(f"subjects={subjects!r}: must be 1-99 (CASME II numbers them sub01..)")
    if clips_per_emotion < 1 or clips_per_emotion > 99:
        raise InputError(f"clips_per_emotion={clips_per_emotion!r}: must be 1-99")
    if seed < 0:
        raise InputError(f"seed={seed!r}: must be >= 0")


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
