"""The Spotter (plain-float rings) against the numpy one it replaced, event for event.

Random and adversarial probability streams go through both: NaN and inf rows, float32 rows
whose sum overflows, time going backwards or standing still, long gaps, several tracks
interleaved and forgotten, the macro class with veto and hold, no background class, float32,
float64 and list rows. Every call's events (every field, as ``repr`` writes it), the skip and drop
counters, each track's baseline and the final flush must be identical.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from edge_mer.pipeline.floats import np_argmax, np_sum
from edge_mer.pipeline.spotter import Spotter
from tests.edge.pipeline import spotter_reference as ref

FPS = 50.0

CASES = {
    "macro veto + hold": (
        ["none", "positive", "negative", "surprise", "macro"],
        dict(smoothing_frames=5, on_threshold=0.3, off_threshold=0.15, min_ms=40, macro_veto=0.5,
             hold_ms=200, refractory_ms=100),
    ),
    "macro drop, long smoothing": (
        ["none", "a", "macro", "b"],
        dict(smoothing_frames=12, on_threshold=0.25, off_threshold=0.1, macro="drop",
             max_micro_ms=300, max_event_ms=1500, macro_veto=0.8),
    ),
    "background, no macro": (
        ["none", "positive", "negative", "surprise"],
        dict(smoothing_frames=3, on_threshold=0.3, off_threshold=0.15, min_ms=120),
    ),
    "no background": (
        ["happy", "sad", "fear", "macro"],
        dict(background=None, smoothing_frames=1, on_threshold=0.2, off_threshold=0.1,
             min_ms=0, hold_ms=60, macro_veto=0.6),
    ),
    "pairwise re-sum (window 9)": (
        ["none", "x", "y", "macro"],
        dict(smoothing_frames=9, on_threshold=0.2, off_threshold=0.1, baseline_s=0.5,
             max_event_ms=800),
    ),
}  # fmt: skip


def streams(labels: list[str], seed: int, n: int = 1500):
    """(track, ts, row) calls: bumps of foreground and macro over a wandering background,
    with bad rows, bad times, gaps and forgotten tracks mixed in; ``None`` = forget."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    bg = labels.index("none") if "none" in labels else -1
    macro = labels.index("macro") if "macro" in labels else -1
    fg = [i for i in range(k) if i not in (bg, macro)]
    calls = []
    clock = {0: 0.0, 1: 0.0, "face": 0.0}
    level = {t: 0.0 for t in clock}
    for _ in range(n):
        track = list(clock)[rng.integers(3)]
        u = rng.random()
        dt = 1 / FPS if u > 0.03 else [0.0, -0.05, 2.5, 1 / FPS * 0.5, 0.7][rng.integers(5)]
        clock[track] += dt
        # a bump starts now and then; levels decay: events of many lengths
        if rng.random() < 0.04:
            level[track] = rng.uniform(0.2, 1.0)
        level[track] *= rng.uniform(0.85, 1.0)
        row = rng.dirichlet(np.full(k, 0.3)) * 0.1
        main = fg[rng.integers(len(fg))]
        if macro >= 0 and rng.random() < 0.3:
            main = macro
        row[main] += level[track]
        if bg >= 0:
            row[bg] += 1.0 - level[track]
        row = row / row.sum()
        bad = rng.random()
        if bad < 0.01:
            row[rng.integers(k)] = np.nan
        elif bad < 0.015:
            row[rng.integers(k)] = np.inf
        elif bad < 0.02:
            row[:] = 3e38  # finite in float32; the float32 sum overflows
        elif bad < 0.025:
            row[rng.integers(k)] = -np.inf
        form = rng.integers(3)
        if form == 0:
            row = row.astype(np.float32)
        elif form == 2:
            row = row.astype(np.float32).tolist()
        calls.append((track, float(clock[track]), row))
        if rng.random() < 0.003:
            calls.append((track, None, None))
    return calls


def fields(events) -> str:
    """Every field of every event, numbers as Python floats (the numpy spotter's score was
    sometimes a ``np.float64``: the same value), exactly as ``repr`` writes them."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return float(v) if isinstance(v, (float, np.floating)) else v

    return repr(
        [{f.name: plain(getattr(ev, f.name)) for f in dataclasses.fields(ev)} for ev in events]
    )


def _as_ref_row(row):
    return np.asarray(row, np.float64) if isinstance(row, list) else row  # a list sums as float64


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_events_as_the_numpy_spotter(case: str, seed: int) -> None:
    labels, kw = CASES[case]
    new = Spotter(labels, fps=FPS, **kw)
    old = ref.Spotter(labels, fps=FPS, **kw)
    emitted = 0
    for track, ts, row in streams(labels, seed):
        if ts is None:
            new.forget(track)
            old.forget(track)
            continue
        got = new.update(track, ts, row)
        want = old.update(track, ts, _as_ref_row(row))
        assert fields(got) == fields(want), (case, seed, track, ts)
        emitted += len(got)
        assert new.skipped == old.skipped and new.dropped == old.dropped
        b_new, b_old = new._tracks[track].baseline, old._tracks[track].baseline
        assert b_new == b_old or (math.isnan(b_new) and math.isnan(b_old))
    assert fields(new.flush()) == fields(old.flush())
    assert new.dropped == old.dropped
    assert new.skipped > 0
    # the streams exercise what they are meant to: events come out, and some are dropped
    assert emitted + sum(new.dropped.values()) > 0


def test_list_rows_equal_their_numpy_rows() -> None:
    labels, kw = CASES["macro veto + hold"]
    a, b = Spotter(labels, fps=FPS, **kw), Spotter(labels, fps=FPS, **kw)
    for track, ts, row in streams(labels, 5):
        if ts is None:
            continue
        arr = np.asarray(row, np.float64)  # a list sums as float64
        assert repr(a.update(track, ts, arr)) == repr(b.update(track, ts, arr.tolist()))
    assert repr(a.flush()) == repr(b.flush())


def test_re_sum_is_numpy_sum() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 140):
        for _ in range(20):
            a = rng.standard_normal((n, 3)) * 10.0 ** rng.integers(-8, 8, (n, 3))
            assert np_sum(a[:, 1].tolist()) == float(a[:, 1].sum())  # a strided column
            assert np_sum(a[:, 0].copy().tolist()) == float(a[:, 0].copy().sum())
        zeros = [-0.0] * n  # the sign of a zero sum too
        assert math.copysign(1, np_sum(zeros)) == math.copysign(1, float(np.sum(zeros)))


def test_argmax_is_numpy_argmax() -> None:
    rng = np.random.default_rng(4)
    for _ in range(500):
        v = rng.integers(-2, 3, int(rng.integers(1, 7))).astype(float)  # ties
        if rng.random() < 0.2:
            v[rng.integers(len(v))] = np.nan
        assert np_argmax(v.tolist()) == int(np.argmax(v))
