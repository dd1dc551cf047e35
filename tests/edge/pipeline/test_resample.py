"""FrameResampler: camera fps -> model fps by seconds."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mer.pipeline.resample import FrameResampler


def run(resampler: FrameResampler, stamps) -> list[int]:
    return [resampler.push(float(t)) for t in stamps]


def nearest_per_tick(stamps, fps, n_ticks):
    ticks = stamps[0] + np.arange(n_ticks) / fps
    return [int(np.argmin(np.abs(stamps - t))) for t in ticks]


def expand(counts):
    return [i for i, c in enumerate(counts) for _ in range(c)]


def test_faster_camera_keeps_the_frame_nearest_each_tick():
    stamps = np.arange(200) / 200.0  # 200 fps camera, 50 fps model
    counts = run(FrameResampler(50), stamps)
    used = expand(counts)
    assert used == list(range(0, 200, 4))
    assert used == nearest_per_tick(stamps, 50, len(used))


def test_non_integer_ratio_matches_nearest():
    stamps = np.arange(300) / 120.0  # 120 -> 50 fps
    used = expand(run(FrameResampler(50), stamps))
    assert len(used) == pytest.approx(300 / 120 * 50, abs=2)
    assert used == nearest_per_tick(stamps, 50, len(used))


def test_jitter_does_not_change_the_rate():
    rng = np.random.default_rng(0)
    stamps = np.arange(2000) / 200.0 + rng.uniform(-0.001, 0.001, 2000)  # +-1 ms on 5 ms
    resampler = FrameResampler(50)
    counts = run(resampler, stamps)
    ticks = sum(counts)
    assert ticks == pytest.approx(10.0 * 50, abs=2)
    used = expand(counts)
    nearest = nearest_per_tick(stamps, 50, len(used))
    # Causal choice: the same frame as the look-ahead nearest, or a neighbour on a near-tie.
    assert max(abs(a - b) for a, b in zip(used, nearest, strict=True)) <= 1
    assert np.mean([a == b for a, b in zip(used, nearest, strict=True)]) > 0.8


def test_slower_camera_repeats_frames():
    stamps = np.arange(60) / 30.0  # 30 fps camera, 50 fps model
    resampler = FrameResampler(50)
    counts = run(resampler, stamps)
    assert set(counts) <= {1, 2} and resampler.repeated > 0
    assert sum(counts) == pytest.approx(2.0 * 50, abs=2)
    used = expand(counts)
    assert used == nearest_per_tick(stamps, 50, len(used))


def test_gap_restarts_grid_and_backwards_is_skipped():
    resampler = FrameResampler(50, max_gap=0.5)
    assert run(resampler, [0.0, 0.02, 0.04]) == [1, 1, 1]
    assert resampler.push(0.04) == 0 and resampler.push(0.03) == 0
    assert resampler.backwards == 2
    assert resampler.push(5.0) == 1 and resampler.restarted and resampler.gaps == 1
    assert resampler.tick_ts(0) == 5.0 and resampler.next_tick == 1
    assert resampler.push(5.02) == 1 and not resampler.restarted


def test_bad_model_fps():
    with pytest.raises(ValueError):
        FrameResampler(0)


def test_one_frame_fills_a_bounded_number_of_ticks() -> None:
    # A model "trained at" 1e12 fps once made the frame loop step ~1e10 times for one
    # 30 fps frame (the manifest now refuses it; the resampler bounds it on its own too).
    huge = FrameResampler(1e12, max_gap=0.5)
    assert huge.max_ticks == 4096
    counts = run(huge, np.arange(10) / 30)
    assert max(counts) <= huge.max_ticks and huge.gaps == 9  # each frame: a fresh grid
    # Every legitimate count fits: a 1 fps camera for a 1000 fps model fills up to 500+.
    slow = FrameResampler(1000, max_gap=0.5)
    assert slow.max_ticks == 751
    counts = run(slow, [0.0, 0.45, 0.9, 1.35])
    assert counts[1:] == [675, 450, 450] and slow.gaps == 0
