"""Spotting evaluation, MEGC style: interval IoU >= 0.5, one match per ground truth.

TP, FP and FN are summed over everything the caller passes (pool several videos by
concatenating their matches' counts, or call :func:`score_events` per video and add the
:class:`SpottingScore` objects). Intervals are ``(onset_s, offset_s)`` or
``(onset_s, offset_s, label)``; times in seconds (or frames: any one unit throughout).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Interval = Sequence[Any]  # (onset, offset) or (onset, offset, label)


def interval_iou(a: Interval, b: Interval, frame_s: float = 0.0) -> float:
    """IoU of two closed intervals. ``frame_s`` > 0 makes the last frame count (the
    interval ends at offset + frame_s), as for inclusive frame annotations."""
    a0, a1 = float(a[0]), float(a[1]) + frame_s
    b0, b1 = float(b[0]), float(b[1]) + frame_s
    inter = min(a1, b1) - max(a0, b0)
    if inter <= 0:
        return 0.0
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def match_events(
    predicted: Sequence[Interval],
    truth: Sequence[Interval],
    iou: float = 0.5,
    frame_s: float = 0.0,
) -> tuple[int, int, int, list[tuple[int, int, float]]]:
    """Greedy one-to-one matching by decreasing IoU; a pair counts when IoU >= ``iou``.

    Returns ``(tp, fp, fn, pairs)`` with pairs ``(pred_index, truth_index, iou)`` sorted
    by truth index. Each ground truth and each prediction is matched at most once.
    """
    candidates = []
    for i, p in enumerate(predicted):
        for j, t in enumerate(truth):
            v = interval_iou(p, t, frame_s)
            if v >= iou and v > 0:
                candidates.append((v, i, j))
    # Highest IoU first; ties go to the earlier prediction, then the earlier truth.
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for v, i, j in candidates:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        pairs.append((i, j, v))
    pairs.sort(key=lambda c: c[1])
    tp = len(pairs)
    return tp, len(predicted) - tp, len(truth) - tp, pairs


@dataclass
class SpottingScore:
    """Counts and the figures derived from them; add two scores to pool them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    label_correct: int = 0
    label_total: int = 0  # matched pairs where both sides carry a label

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    @property
    def label_accuracy(self) -> float | None:
        return self.label_correct / self.label_total if self.label_total else None

    def __add__(self, other: SpottingScore) -> SpottingScore:
        return SpottingScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.label_correct + other.label_correct,
            self.label_total + other.label_total,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "label_accuracy": self.label_accuracy,
        }


def score_events(
    predicted: Sequence[Interval],
    truth: Sequence[Interval],
    iou: float = 0.5,
    frame_s: float = 0.0,
) -> SpottingScore:
    """Match, then count; label accuracy over matched pairs that both carry a label."""
    tp, fp, fn, pairs = match_events(predicted, truth, iou, frame_s)
    correct = total = 0
    for i, j, _ in pairs:
        p, t = predicted[i], truth[j]
        if len(p) > 2 and len(t) > 2 and p[2] is not None and t[2] is not None:
            total += 1
            correct += p[2] == t[2]
    return SpottingScore(tp, fp, fn, correct, total)


def intervals_from_records(
    records: Iterable[Mapping[str, Any]], types: Sequence[str] | None = None
) -> list[tuple[float, float, str]]:
    """``(onset_ts, offset_ts, label)`` of event records (DESIGN §6), optionally by type."""
    return [
        (float(r["onset_ts"]), float(r["offset_ts"]), str(r["label"]))
        for r in records
        if types is None or r.get("type") in types
    ]


def latency_stats(records: Iterable[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """p50 / p95 / max / mean of ``latency_ms`` over event records; None when empty."""
    lat = np.array([float(r["latency_ms"]) for r in records], dtype=np.float64)
    if not lat.size:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "count": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
        "mean_ms": float(lat.mean()),
    }


def intervals_from_truth(
    events: Iterable[Any], kinds: Sequence[str] | None = None
) -> list[tuple[float, float, str]]:
    """``(onset_s, offset_s, emotion)`` of ground-truth objects with those attributes
    (e.g. ``calibration.synth.SynthEvent``; duck-typed, no import), optionally by ``kind``
    ("micro" | "macro")."""
    return [
        (float(e.onset_s), float(e.offset_s), str(e.emotion))
        for e in events
        if kinds is None or e.kind in kinds
    ]
