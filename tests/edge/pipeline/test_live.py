"""The frame loop in-process: no per-frame allocation in steady state, bounded memory."""

from __future__ import annotations

import math
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import prometheus_client
import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

import edge_mer
from edge_mer.config import config_from_args
from edge_mer.pipeline.live import STAGES, LivePipeline, StageClock, spot
from edge_mer.pipeline.spotter import Spotter
from tests.edge.service.test_daemon import bundle  # noqa: F401  (module-scoped fixture)

EDGE = str(Path(edge_mer.__file__).parent)
# The metrics the loop updates per frame (frames, frame latency) are prometheus_client's.
PROMETHEUS = str(Path(prometheus_client.__file__).parent)


def test_frame_loop_allocates_nothing_per_frame(bundle: Path) -> None:  # noqa: F811
    # 50 fps camera = 50 fps model: every frame goes through face, crop, encoder, step and
    # spotter. Face detection every frame with the full-frame detector.
    cfg = config_from_args(
        bundle,
        "synthetic://?seconds=60&fps=50&seed=2",
        stdout=False,
        tables={"face": {"detector": "none", "detect_every": 1}, "metrics": {"enabled": False}},
    )
    # Tracing is switched on and off only while no other thread runs: tracemalloc.start()
    # or stop() while the capture thread allocates can crash CPython 3.11 (seen once in CI).
    tracemalloc.start()
    try:
        with LivePipeline(cfg) as p:
            for _ in range(200):  # warm-up: caches, bindings, cv2 scratch
                assert p.run_frame(5.0)
            before = tracemalloc.take_snapshot()
            for _ in range(600):
                p.run_frame(5.0)
            after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert p.model_frames == 800
    only_loop = [
        tracemalloc.Filter(True, EDGE + "/*"),
        tracemalloc.Filter(True, PROMETHEUS + "/*"),
        # events are allocated per event, not per frame; their count depends on
        # what the (random) model sees
        tracemalloc.Filter(False, EDGE + "/spotter.py"),
    ]
    diff = after.filter_traces(only_loop).compare_to(before.filter_traces(only_loop), "lineno")
    blocks = sum(d.count_diff for d in diff) - 2 * p.events  # a record and its probs dict
    # One retained object per frame would be >= 600; what remains is a constant handful
    # (counters past the small-int cache, cv2's scratch wrappers).
    assert blocks < 120, [str(d) for d in diff[:8]]
    prometheus = [d for d in diff if d.traceback[0].filename.startswith(PROMETHEUS)]
    assert sum(d.count_diff for d in prometheus) < 10, [str(d) for d in prometheus[:8]]


def test_stage_clock_keeps_a_bounded_window() -> None:
    clock = StageClock(keep=4)
    for i in range(10):
        clock.add("encoder", i / 1000)
    s = clock.summary()["encoder"]
    assert s["count"] == 10 and s["max_ms"] == pytest.approx(9.0)
    assert s["mean_ms"] == pytest.approx((6 + 7 + 8 + 9) / 4)


def test_stage_clock_frame_records_what_six_adds_would() -> None:
    one, six = StageClock(keep=5), StageClock(keep=5)
    for i in range(12):
        t = [i + j * 0.25 + j * j * 0.01 for j in range(8)]
        if i % 4 == 3:  # a frame that stopped after the face stage
            for c in (one, six):
                c.add("capture", t[1] - t[0])
                c.add("face", t[2] - t[1])
            continue
        one.frame(*t)
        for stage, k in zip(STAGES[:6], range(6), strict=True):
            six.add(stage, t[k + 1] - t[k])
        six.add_latency(t[7] - t[1])
    assert one.summary(samples=True) == six.summary(samples=True)
    assert one.latency_ring()[0] == six.latency_ring()[0] == 9
    assert (one.latency_ring()[1] == six.latency_ring()[1]).all()
    assert [(s, n) for s, n, _ in one.rings()] == [(s, n) for s, n, _ in six.rings()]


def test_spot_gives_the_spotter_the_float32_softmax() -> None:
    # What the loop always fed the spotter: a float64 softmax of the logits written into a
    # float32 row. It is now rounded with one struct call, which must give the same values.
    rng = np.random.default_rng(0)
    logits = np.zeros((3, 5), np.float32)
    spotter = Spotter(["none", "a", "b", "c", "d"], fps=50.0)
    calls: list[tuple[int, float, tuple]] = []
    spotter.tap = lambda track, ts, probs: calls.append((track, ts, tuple(probs)))
    f32 = struct.Struct("5f")
    ready = np.array([True, True, False])
    row = np.zeros(5, np.float32)
    for i in range(300):
        logits[:] = rng.standard_normal((3, 5)) * 10 ** rng.uniform(-3, 2)
        if i % 50 == 0:
            logits[1, 2] = [np.nan, np.inf, -np.inf][i % 3]
        calls.clear()
        spot(spotter, f32, [7, 8, 9], logits, ready, 1.5 + i)
        assert [(t, ts) for t, ts, _ in calls] == [(7, 1.5 + i), (8, 1.5 + i)]  # 9 is not ready
        for k, (_, _, got) in enumerate(calls):
            x = logits[k].tolist()
            top = max(x)
            e = [math.exp(v - top) for v in x]
            inv = 1.0 / sum(e)
            row[:] = [v * inv for v in e]
            assert np.array_equal(np.array(got, np.float32), row, equal_nan=True)
            assert list(got) == row.tolist() or np.isnan(row).any()


def test_gray_frames_give_a_gray_model_what_bgr_frames_do(bundle: Path) -> None:  # noqa: F811
    # picam:// and csi:// hand a gray model gray frames. The preprocessor converts a BGR frame
    # with the same OpenCV call, on the whole frame before the crop and resize, so the model
    # and the spotter see the same values either way: the same probabilities, the same events.
    from edge_mer.pipeline.sources import SourceEnded

    seen: dict[str, tuple[list, list]] = {}
    for fmt in ("bgr", "gray"):
        cfg = config_from_args(
            bundle,
            f"synthetic://?seconds=4&fps=50&seed=3&micro_rate=2&format={fmt}",
            stdout=False,
            tables={"face": {"detector": "none"}, "metrics": {"enabled": False}},
        )
        probs: list[tuple[float, tuple[float, ...]]] = []
        with LivePipeline(cfg) as p:
            p.spotter.tap = lambda track, ts, pr, probs=probs: probs.append((ts, tuple(pr)))
            with pytest.raises(SourceEnded):
                while True:
                    p.run_frame(5.0)
        events = [(r["label"], r["onset_ts"], r["offset_ts"]) for r in p.records]
        seen[fmt] = (probs, events)
    assert len(seen["bgr"][0]) > 150
    assert seen["gray"] == seen["bgr"]
