"""IoU matching, MEGC spotting style."""

from __future__ import annotations

import pytest

from edge_mer.pipeline.spotting_eval import (
    SpottingScore,
    interval_iou,
    intervals_from_records,
    latency_stats,
    match_events,
    score_events,
)


def test_iou_basics():
    assert interval_iou((0, 1), (0, 1)) == 1.0
    assert interval_iou((0, 1), (1, 2)) == 0.0
    assert interval_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    # Inclusive frames: frames 0..1 and 1..2 share frame 1 of 3.
    assert interval_iou((0, 1), (1, 2), frame_s=1) == pytest.approx(1 / 3)
    assert interval_iou((1, 1), (1, 1)) == 0.0  # zero length, no frame length given


def test_threshold_is_inclusive_at_half():
    assert match_events([(0, 1)], [(0, 2)])[:3] == (1, 0, 0)  # IoU exactly 0.5
    assert match_events([(0, 0.99)], [(0, 2)])[:3] == (0, 1, 1)


def test_one_match_per_truth_and_per_prediction():
    truth = [(0.0, 1.0)]
    pred = [(0.0, 0.9), (0.05, 1.0), (0.0, 1.0)]
    tp, fp, fn, pairs = match_events(pred, truth)
    assert (tp, fp, fn) == (1, 2, 0)
    assert pairs == [(2, 0, 1.0)]  # the best IoU wins
    # One long prediction overlapping two truths matches at most one.
    tp, fp, fn, _ = match_events([(0, 2.2)], [(0, 1), (1.1, 2.2)], iou=0.4)
    assert (tp, fp, fn) == (1, 0, 1)


def test_greedy_by_iou_not_by_order():
    truth = [(0.0, 1.0), (0.6, 1.6)]
    pred = [(0.5, 1.5), (0.0, 1.0)]
    tp, fp, fn, pairs = match_events(pred, truth)
    assert (tp, fp, fn) == (2, 0, 0)
    assert {(i, j) for i, j, _ in pairs} == {(1, 0), (0, 1)}


def test_empty_sides():
    assert match_events([], [])[:3] == (0, 0, 0)
    assert match_events([(0, 1)], [])[:3] == (0, 1, 0)
    assert match_events([], [(0, 1)])[:3] == (0, 0, 1)
    s = score_events([], [])
    assert s.precision == s.recall == s.f1 == 0.0 and s.label_accuracy is None


def test_scores_pool_and_label_accuracy():
    a = score_events([(0, 1, "happy"), (5, 6, "sad")], [(0, 1, "happy"), (5, 6, "fear")])
    b = score_events([(0, 1, None)], [(3, 4, "sad")])
    assert (a.tp, a.label_correct, a.label_total, a.label_accuracy) == (2, 1, 2, 0.5)
    pooled = a + b
    assert isinstance(pooled, SpottingScore)
    assert (pooled.tp, pooled.fp, pooled.fn) == (2, 1, 1)
    assert pooled.precision == pytest.approx(2 / 3) and pooled.recall == pytest.approx(2 / 3)
    assert pooled.f1 == pytest.approx(4 / 6)
    assert pooled.as_dict()["f1"] == pytest.approx(4 / 6)


def test_records_and_latency():
    recs = [
        {"type": "micro_expression", "onset_ts": 1, "offset_ts": 1.2, "label": "x", "latency_ms": v}
        for v in range(1, 101)
    ]
    recs.append({"type": "macro_expression", "onset_ts": 3, "offset_ts": 4, "label": "y",
                 "latency_ms": 500.0})  # fmt: skip
    assert len(intervals_from_records(recs, types=["micro_expression"])) == 100
    st = latency_stats(recs)
    assert st["count"] == 101 and st["max_ms"] == 500.0
    assert st["p50_ms"] == pytest.approx(51.0) and 94 < st["p95_ms"] < 97
    assert latency_stats([])["p50_ms"] is None


def test_truth_from_synth_like_objects():
    from types import SimpleNamespace as NS

    from edge_mer.pipeline.spotting_eval import intervals_from_truth

    ev = [NS(kind="micro", emotion="happy", onset_s=1.0, offset_s=1.3),
          NS(kind="macro", emotion="sad", onset_s=3.0, offset_s=4.5)]  # fmt: skip
    assert intervals_from_truth(ev, kinds=["micro"]) == [(1.0, 1.3, "happy")]
    assert len(intervals_from_truth(ev)) == 2
