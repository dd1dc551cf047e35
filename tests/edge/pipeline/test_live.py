"""The frame loop in-process: no per-frame allocation in steady state, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import prometheus_client
import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

import edge_mer
from edge_mer.config import config_from_args
from edge_mer.pipeline.live import LivePipeline, StageClock
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
