"""What the two training stages learn from: clips in memory, and the samples cut from them.

A :class:`TrainClip` is one coded clip already at the model's fps, size and colour (uint8
``[T, H, W, C]``), with its label name, subject and event indices. Stage 1 (the CNN) learns
from frames or frame pairs around the apex; stage 2 (the temporal head) and the end-to-end
fine-tune from windows of ``input.window`` frames, given as ``(clip, last frame)`` indices
into the clips (or into their cached features), never copied.

The background class (the label of neutral frames and windows, "none" in the embedded
demo) is optional: with ``background=None`` only the emotion around each apex is learnt,
as LOSO on CASME II's three MEGC classes needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_mer.errors import DataError, InputError

log = logging.getLogger(__name__)

__all__ = [
    "Events",
    "SequenceData",
    "TrainClip",
    "eval_window_end",
    "frame_set",
    "jitter",
    "load_clip_folder",
    "pair_set",
    "sequence_data",
    "window_index",
]


@dataclass
class TrainClip:
    """One training or validation clip, in memory.

    Attributes:
        frames: uint8 ``[T, H, W, C]`` at the model's fps, height, width and channels.
        label: a name in the model config's ``labels``.
        subject: the subject id (for the record; training does not split by it).
        onset, apex, offset: frame indices into ``frames`` (None when unknown: the apex
            then defaults to the onset/offset midpoint, the onset to 0, the offset to the
            last frame). A clip whose label is the background class has no event.
        sample_id: a stable id (``dataset/subject/clip``), for the record.
    """

    frames: np.ndarray
    label: str
    subject: str = ""
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None
    sample_id: str = ""


@dataclass(frozen=True)
class Events:
    """A clip's label index and resolved event indices (None for a background clip)."""

    label: int
    onset: int | None
    apex: int | None
    offset: int | None


def check_clips(clips: Sequence[TrainClip], labels: list[str], spec: dict, what: str) -> None:
    """Refuse clips whose label or frame shape does not fit the model, in one line."""
    shape = (spec["height"], spec["width"], spec["channels"])
    for i, c in enumerate(clips):
        name = c.sample_id or f"{what} clip {i}"
        if c.label not in labels:
            raise DataError(f"{name}: label {c.label!r} is not one of the model's {labels}")
        f = c.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4:
            raise DataError(f"{name}: frames must be a uint8 array [T, H, W, C]")
        if tuple(f.shape[1:]) != shape or len(f) < 1:
            raise DataError(
                f"{name}: frames {tuple(f.shape)} do not match the model input [T, {shape[0]}, "
                f"{shape[1]}, {shape[2]}]: resize and convert them first"
            )


def resolve_events(clip: TrainClip, labels: list[str], background: str | None) -> Events:
    label = labels.index(clip.label)
    if clip.label == background:
        return Events(label, None, None, None)
    n = len(clip.frames)

    def at(i: int | None, default: int) -> int:
        return default if i is None else min(n - 1, max(0, int(i)))

    onset, offset = at(clip.onset, 0), at(clip.offset, n - 1)
    return Events(label, onset, at(clip.apex, (onset + offset) // 2), offset)


def padded(frames: np.ndarray, window: int) -> np.ndarray:
    """``frames`` with the last frame repeated up to ``window`` (the device holds a face)."""
    if len(frames) >= window:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], window - len(frames), axis=0)])


def eval_window_end(n: int, events: Events, window: int) -> int:
    """The last frame of a clip's evaluation window: a quarter window after the apex for an
    event (as ``calibration.evaluate.clip_windows``), the clip's end for background."""
    if events.apex is None:
        return n - 1
    return min(n - 1, max(window - 1, events.apex + window // 4))


@dataclass
class SequenceData:
    """One run's sequences (clips padded to the window, then streams), the clips' events,
    the training windows as indices into them, and one validation window per clip."""

    frames: list[np.ndarray]
    events: list[Any]
    rows: np.ndarray  # [M, 2]: (clip, last frame) of each training window (after stage 1)
    labels: np.ndarray  # [M]
    val_windows: np.ndarray  # uint8 [V, T, H, W, C]: one evaluation window per clip
    val_truth: torch.Tensor  # [V]

    def frame_windows(self, idx: torch.Tensor, t: int) -> np.ndarray:
        return np.stack([self.frames[c][e - t + 1 : e + 1] for c, e in self.rows[idx.numpy()]])


def sequence_data(
    train: list[TrainClip],
    val: list[TrainClip],
    labels: list[str],
    t: int,
    bg: str | None,
    streams: list[Any],
) -> SequenceData:
    """Clip frames (padded to the window) then stream frames, one sequence each."""
    events = [resolve_events(c, labels, bg) for c in train]
    frames = [padded(c.frames, t) for c in train] + [s.frames for s in streams]
    windows, truth = [], []
    for c in val:
        e = resolve_events(c, labels, bg)
        f = padded(c.frames, t)
        end = eval_window_end(len(f), e, t)
        windows.append(f[end - t + 1 : end + 1])
        truth.append(e.label)
    shape = (0, t, *frames[0].shape[1:])
    return SequenceData(
        frames,
        events,
        np.zeros((0, 2), np.int64),
        np.zeros(0, np.int64),
        np.stack(windows) if windows else np.zeros(shape, np.uint8),
        torch.tensor(truth, dtype=torch.long),
    )


def frame_set(
    clips: Sequence[np.ndarray], events: Sequence[Events], bg: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Single frames: around each apex with the emotion; neutral frames (before the onset,
    and every 2nd frame of background clips) with the background label, if there is one."""
    xs, ys = [], []
    for frames, e in zip(clips, events, strict=True):
        if e.apex is None:
            if bg is not None:
                idx = np.arange(0, len(frames), 2)
                xs.append(frames[idx])
                ys.append(np.full(len(idx), bg))
            continue
        lo, hi = max(0, e.apex - 1), min(len(frames), e.apex + 2)
        xs.append(frames[lo:hi])
        ys.append(np.full(hi - lo, e.label))
        if bg is not None and e.onset:
            neutral = frames[: e.onset : 2]
            xs.append(neutral)
            ys.append(np.full(len(neutral), bg))
    if not xs:
        raise DataError("no frames to train the CNN on: no clip has an apex or background")
    return np.concatenate(xs), np.concatenate(ys)


def pair_set(
    clips: Sequence[np.ndarray],
    events: Sequence[Events],
    bg: int | None,
    rng: np.random.Generator,
    per_clip: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame pairs from one clip, ``[M, 2, H, W, C]``: (neutral, near-apex) pairs carry the
    emotion, (neutral, neutral) pairs the background label (when there is one). Training the
    CNN on the pair's feature difference makes the difference encode facial motion,
    whoever the subject is."""
    xs, ys = [], []
    for frames, e in zip(clips, events, strict=True):
        n = len(frames)
        if e.apex is None:
            if bg is not None and n >= 2:
                for _ in range(per_clip // 2):
                    a, b = rng.choice(n, size=2, replace=False)
                    xs.append(frames[[a, b]])
                    ys.append(bg)
            continue
        ref_hi = max(1, e.onset or 0)
        lo, hi = max(0, e.apex - 2), min(n, e.apex + 3)
        for _ in range(per_clip):
            xs.append(frames[[int(rng.integers(0, ref_hi)), int(rng.integers(lo, hi))]])
            ys.append(e.label)
        if bg is not None and ref_hi >= 2:
            for _ in range(per_clip // 4):
                a, b = rng.choice(ref_hi, size=2, replace=False)
                xs.append(frames[[a, b]])
                ys.append(bg)
    if not xs:
        raise DataError("no frame pairs to train the CNN on: no clip has an apex or background")
    return np.stack(xs), np.asarray(ys)


def window_index(
    lengths: Sequence[int],
    events: Sequence[Events],
    window: int,
    bg: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Training windows as ``(clip, last frame)`` rows ``[M, 2]`` and labels ``[M]``.

    Windows whose last frame lies between the apex and a quarter window after the offset
    carry the emotion; up to 3 windows of neutral frames before the onset, and background
    clips every quarter window, carry the background label (when there is one).
    ``lengths`` are the clips' lengths after :func:`padded`.
    """
    rows: list[tuple[int, int]] = []
    ys: list[int] = []
    for ci, (n, e) in enumerate(zip(lengths, events, strict=True)):
        if e.apex is None:
            if bg is not None:
                lasts = range(window - 1, n, max(1, window // 4))
                rows += [(ci, last) for last in lasts]
                ys += [bg] * len(lasts)
            continue
        last_lo = max(window - 1, e.apex)
        last_hi = min(n - 1, max(last_lo, (e.offset or e.apex) + window // 4))
        rows += [(ci, last) for last in range(last_lo, last_hi + 1)]
        ys += [e.label] * (last_hi - last_lo + 1)
        if bg is not None and e.onset is not None and e.onset >= window:
            count = min(3, e.onset - window + 1)
            for last in rng.choice(np.arange(window - 1, e.onset), size=count, replace=False):
                rows.append((ci, int(last)))
                ys.append(bg)
    if not rows:
        raise DataError("no training windows: no clip has an apex or a background label")
    return np.asarray(rows, dtype=np.int64), np.asarray(ys, dtype=np.int64)


def load_clip_folder(
    root: Path,
    spec: dict[str, Any],
    labels: list[str],
    label_map: dict[str, str],
    background: str | None,
    say: Callable[[str], None],
) -> list[TrainClip]:
    """Coded clips of a CASME II-layout folder, preprocessed as the device does (crop ->
    resize -> gray/RGB, resampled by seconds to the model's fps), as :class:`TrainClip`.
    Emotions are mapped with ``label_map``; those that map to no label are skipped."""
    from edge_mer.calibration.readers import discover_clips
    from edge_mer.pipeline.preprocess import FramePreprocessor

    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    sources = [s for s in discover_clips(Path(root)) if s.coded is not None]
    if not sources:
        raise DataError(
            f"no coded clips in {str(root)!r}: training needs a folder in the "
            "CASME II layout (CASME2-coding.csv + subXX/EPxx/imgN.jpg)"
        )
    clips: list[TrainClip] = []
    skipped: dict[str, int] = {}
    for i, src in enumerate(sources):
        coded = src.coded
        name = label_map.get(coded.canonical_emotion, coded.canonical_emotion)
        if name not in labels:
            skipped[coded.emotion] = skipped.get(coded.emotion, 0) + 1
            continue
        frames = src.load(pre, fps=spec["fps"])
        ratio = spec["fps"] / coded.fps

        def at(index: int | None, n: int = len(frames), r: float = ratio) -> int | None:
            return None if index is None else min(n - 1, round(index * r))

        event = name != background
        apex = coded.apex_index if coded.apex is not None else None
        clips.append(
            TrainClip(
                frames,
                name,
                str(coded.subject),
                at(coded.onset_index) if event else None,
                at(apex) if event else None,
                at(coded.offset_index) if event else None,
                f"{coded.subject}/{coded.filename}",
            )
        )
        if (i + 1) % 10 == 0:
            say(f"loaded {i + 1}/{len(sources)} clips")
    if skipped:
        log.warning("skipped clips whose emotion maps to no label: %s", skipped)
    if len({c.label for c in clips}) < 2:
        raise DataError(
            f"clips in {str(root)!r} cover {len({c.label for c in clips})} of the labels "
            f"{labels}: training needs at least two classes"
        )
    return clips


def resolve_background(background: str | None, labels: list[str]) -> str | None:
    """``"auto"``: "none" if it is a label, else no background class; a name must be a label."""
    if background == "auto":
        return "none" if "none" in labels else None
    if background is not None and background not in labels:
        raise InputError(
            f"background label {background!r} is not in labels {labels}; use one of them, "
            "'auto' or None (no background class)"
        )
    return background


def jitter(frames: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Each frame shifted by up to ``shift`` px (edges replicated) and its gain varied 5 %.

    Independent per frame, so a clip's own head drift and noise pattern cannot serve as a
    label shortcut: only the facial motion is common to the frames of a class.
    """
    flat = frames.reshape(-1, *frames.shape[-3:])
    n, h, w, _ = flat.shape
    padded_ = torch.nn.functional.pad(
        flat.permute(0, 3, 1, 2).float(), (shift,) * 4, mode="replicate"
    )
    offs = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)
    out = torch.stack(
        [
            padded_[i, :, int(dy) : int(dy) + h, int(dx) : int(dx) + w]
            for i, (dy, dx) in enumerate(offs)
        ]
    )
    gain = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    out = (out * gain).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return out.reshape(frames.shape)
