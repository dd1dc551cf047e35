"""Spotter on probability sequences built in-test."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer.pipeline.spotter import MACRO, MICRO, Spotter
from edge_mer.pipeline.spotting_eval import score_events

LABELS = ["none", "positive", "negative", "surprise"]
FPS = 100.0
RECORD_KEYS = {
    "type", "label", "score", "probs", "track", "onset_ts", "apex_ts", "offset_ts",
    "duration_ms", "emitted_ts", "latency_ms", "source", "model",
}  # fmt: skip


def bump_probs(n, bumps, base_bg=0.92, cls=1, amp=0.8, drift=None, seed=0):
    """[n, K] probabilities: background ``base_bg`` (or ``drift[t]``) plus box-like
    Gaussian-edged bumps ``(start_s, dur_s)`` in class ``cls``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    fg = np.zeros(n)
    for start, dur in bumps:
        mid, sigma = start + dur / 2, dur / 4
        fg = np.maximum(fg, amp * np.exp(-0.5 * ((t - mid) / sigma) ** 2))
    bg = (drift if drift is not None else np.full(n, base_bg)) * (1 - fg)
    p = np.zeros((n, len(LABELS)))
    p[:, 0] = bg
    rest = 1 - bg
    p[:, cls] = rest * 0.7
    others = [k for k in range(1, len(LABELS)) if k != cls]
    for k in others:
        p[:, k] = rest * 0.3 / len(others)
    p += rng.uniform(0, 0.005, p.shape)
    return t, p / p.sum(1, keepdims=True)


def run(spotter, t, p, track=0):
    events = []
    for ts, row in zip(t, p, strict=True):
        events += spotter.update(track, float(ts), row)
    return events + spotter.flush()


def make(**kw):
    args = dict(
        labels=LABELS, fps=FPS, smoothing_frames=5, on_threshold=0.3, off_threshold=0.15,
        baseline_s=2.0, min_ms=40, refractory_ms=300,
    )  # fmt: skip
    args.update(kw)
    return Spotter(**args)


def test_micro_bump_gives_one_event_with_label_and_timing():
    t, p = bump_probs(500, [(2.0, 0.2)], cls=2)
    (ev,) = run(make(), t, p)
    assert ev.type == MICRO and ev.label == "negative" and ev.track == 0
    # The score rises by 0.92 * 0.8 * gauss; the event spans where that exceeds off=0.15.
    half = 0.05 * np.sqrt(-2 * np.log(0.15 / (0.92 * 0.8)))
    assert ev.onset_ts == pytest.approx(2.1 - half, abs=0.021)  # within two frames
    assert ev.offset_ts == pytest.approx(2.1 + half, abs=0.021)
    assert ev.apex_ts == pytest.approx(2.1, abs=0.021)
    assert ev.duration_ms == pytest.approx(2000 * half, abs=30)
    assert ev.closing_ts > ev.offset_ts  # known only once the score has fallen
    assert ev.closing_ts - ev.offset_ts < 0.05
    assert ev.probs["negative"] == max(v for k, v in ev.probs.items() if k != "none")
    assert 0.5 < ev.score <= 1.0


def test_macro_bump_reported_or_dropped_by_config():
    t, p = bump_probs(600, [(2.0, 1.8)])
    (ev,) = run(make(), t, p)
    assert ev.type == MACRO and ev.duration_ms > 500 and ev.label == "positive"
    sp = make(macro="drop")
    assert run(sp, t, p) == []
    assert sp.dropped["macro"] == 1


def test_noise_below_threshold_gives_nothing():
    rng = np.random.default_rng(1)
    n = 3000
    p = np.zeros((n, 4))
    p[:, 0] = 0.85 + rng.uniform(-0.1, 0.1, n)
    p[:, 1:] = (1 - p[:, :1]) / 3
    assert run(make(), np.arange(n) / FPS, p) == []


def test_slow_drift_is_absorbed_by_rolling_baseline():
    n = 6000  # 60 s, background 0.95 -> 0.45: a static threshold would fire
    drift = np.linspace(0.95, 0.45, n)
    t, p = bump_probs(n, [], drift=drift)
    assert run(make(), t, p) == []
    # ... while a real bump on top of the drifted level is still found.
    t, p = bump_probs(n, [(50.0, 0.25)], drift=drift)
    (ev,) = run(make(), t, p)
    assert ev.onset_ts == pytest.approx(50.125 - 0.07, abs=0.05)


def test_two_bumps_within_refractory_give_one_event():
    t, p = bump_probs(600, [(2.0, 0.2), (2.35, 0.2)])
    assert len(run(make(refractory_ms=400), t, p)) == 1
    assert len(run(make(refractory_ms=50), t, p)) == 2


def test_tracks_are_independent():
    sp = make()
    t, pa = bump_probs(500, [(1.0, 0.2)], cls=1)
    _, pb = bump_probs(500, [(3.0, 0.2)], cls=3)
    out = []
    for ts, a, b in zip(t, pa, pb, strict=True):
        out += sp.update("a", float(ts), a)
        out += sp.update("b", float(ts), b)
    assert [(e.track, e.label) for e in out] == [("a", "positive"), ("b", "surprise")]
    assert out[0].onset_ts < 1.2 < 2.5 < out[1].onset_ts


def test_too_short_dropped_and_bad_frames_skipped():
    t, p = bump_probs(400, [(2.0, 0.06)])
    sp = make(min_ms=80, smoothing_frames=1)
    assert run(sp, t, p) == []
    assert sp.dropped["too_short"] == 1
    p[10] = np.nan
    run(sp, t, p)
    assert sp.skipped >= 1


def test_record_has_exactly_design_keys():
    t, p = bump_probs(500, [(2.0, 0.2)])
    (ev,) = run(make(), t, p)
    rec = ev.to_record("synthetic://", "tiny", "abc123", emitted_ts=ev.closing_ts + 0.004)
    assert set(rec) == RECORD_KEYS
    assert rec["type"] == "micro_expression"
    assert rec["latency_ms"] == pytest.approx(4.0)
    assert rec["model"] == {"name": "tiny", "hash": "abc123"}
    assert set(rec["probs"]) == set(LABELS)
    assert rec["duration_ms"] == pytest.approx(
        (rec["offset_ts"] - rec["onset_ts"]) * 1000, abs=1e-3
    )


def test_stream_of_events_scores_well():
    truth = [(1.0 + 2.5 * i, 0.15 + 0.05 * (i % 5)) for i in range(12)]
    t, p = bump_probs(3300, truth)
    events = run(make(), t, p)
    pred = [(e.onset_ts, e.offset_ts, e.label) for e in events]
    # Ground truth intervals: where the bump is above half amplitude.
    gt = [(s + d / 2 - 1.18 * d / 4, s + d / 2 + 1.18 * d / 4, "positive") for s, d in truth]
    sc = score_events(pred, gt)
    assert sc.precision == 1.0 and sc.recall == 1.0 and sc.label_accuracy == 1.0


def test_bad_arguments_name_the_value():
    with pytest.raises(InputError, match="'neutral'"):
        Spotter(LABELS, background="neutral")
    with pytest.raises(InputError, match="macro"):
        Spotter(LABELS, macro="keep")
    with pytest.raises(InputError, match="off_threshold"):
        Spotter(LABELS, on_threshold=0.1, off_threshold=0.2)


def with_macro(p: np.ndarray, t: np.ndarray, spans=()) -> np.ndarray:
    """``p`` with a fifth class ``macro`` that takes most of the background within
    ``spans`` (start_s, end_s)."""
    out = np.concatenate([p, np.full((len(p), 1), 0.002)], axis=1)
    for a, b in spans:
        m = (t >= a) & (t <= b)
        out[m, 4] = out[m, 0] * 0.95
        out[m, 0] *= 0.05
    return out / out.sum(1, keepdims=True)


def test_macro_class_is_background_and_vetoes_what_goes_on_into_a_macro_expression():
    labels = [*LABELS, "macro"]
    t, p = bump_probs(800, [(2.0, 0.2), (5.0, 0.2)], cls=1)
    # The second bump is a macro-expression's start: the face goes on moving after it.
    p5 = with_macro(p, t, [(5.25, 6.5)])
    plain = run(make(labels=labels), t, p5)  # the macro class alone counts as background
    assert [e.label for e in plain] == ["positive", "positive"]
    assert all(e.probs["macro"] < 0.5 for e in plain)
    sp = make(labels=labels, macro_veto=0.5, hold_ms=150)
    (ev,) = run(sp, t, p5)
    assert ev.onset_ts == pytest.approx(plain[0].onset_ts)
    assert ev.closing_ts == pytest.approx(plain[0].closing_ts + 0.15, abs=0.011)  # held
    assert sp.dropped["macro_veto"] == 1
    # Without the hold the veto only sees the event itself: both go out, on time.
    both = run(make(labels=labels, macro_veto=0.5), t, p5)
    assert [e.closing_ts for e in both] == [e.closing_ts for e in plain]
    # A model without a macro class: the two keys change nothing.
    assert len(run(make(macro_veto=0.1, hold_ms=300), t, p)) == 2


def test_held_event_goes_out_at_the_end_of_the_stream():
    labels = [*LABELS, "macro"]
    t, p = bump_probs(300, [(2.5, 0.2)], cls=3)
    sp = make(labels=labels, macro_veto=0.9, hold_ms=2000)
    events = []
    for ts, row in zip(t, with_macro(p, t), strict=True):
        events += sp.update(0, float(ts), row)
    assert events == []  # still held when the stream ends
    (ev,) = sp.flush()
    assert ev.label == "surprise" and ev.closing_ts == pytest.approx(t[-1])


def test_tap_sees_every_call_as_passed_and_changes_nothing():
    """The tap (how spot-eval records probabilities) hears each update before the spotter
    decides anything, skipped frames included, and the events are those without it."""
    t, p = bump_probs(300, [(1.0, 0.2)])
    heard = []
    tapped = make()
    tapped.tap = lambda track, ts, probs: heard.append((track, ts, tuple(probs)))
    got = run(tapped, t, p)
    tapped.update(0, 0.5, p[0])  # time going backwards: skipped, but heard
    assert [e.onset_ts for e in got] == [e.onset_ts for e in run(make(), t, p)] and got
    assert len(heard) == 301 and tapped.skipped == 1
    assert heard[0] == (0, float(t[0]), tuple(p[0])) and heard[-1][1] == 0.5


def test_numpy_times_and_tuples_are_accepted():
    """Capture times may be numpy scalars and probabilities tuples (compiled or not)."""
    t, p = bump_probs(300, [(1.0, 0.2)])
    plain = run(make(), t, p)
    sp = make()
    events = []
    for ts, row in zip(t, p, strict=True):
        events += sp.update(0, np.float32(ts) if ts < 0.5 else np.float64(ts), tuple(row))
    events += sp.flush()
    assert [(e.label, e.onset_ts, e.offset_ts) for e in events] == [
        (e.label, e.onset_ts, e.offset_ts) for e in plain
    ]
