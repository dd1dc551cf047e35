"""Causal spotting: per-frame class probabilities -> micro-expression events.

One :class:`Spotter` serves every face track of a stream; each track keeps its own fixed
buffers (lists of floats: a handful of values per frame, where numpy's per-call cost
would dominate), created on the track's first frame. Per frame and track:

1. score = 1 - p(background) (or the max probability when there is no background class);
2. causal moving mean over ``smoothing_frames``; the smoothed value is attributed to the
   capture time of the window's middle frame, so onset/offset timestamps are not shifted
   by the smoothing's group delay;
3. minus a rolling baseline: an EMA of the smoothed score with time constant
   ``baseline_s``, updated only outside events (never whole-video statistics);
4. hysteresis: an event opens when the detrended score reaches ``on_threshold`` and closes
   at the first frame below ``off_threshold``; its onset is the frame where the score last
   rose above ``off_threshold``;
5. duration filter: shorter than ``min_ms`` -> dropped; up to ``max_micro_ms`` ->
   ``micro_expression``; longer -> ``macro_expression`` (reported or dropped, ``macro``);
   longer than ``max_event_ms`` -> a level shift, not an expression: dropped and the
   baseline re-seeded;
6. a refractory period per track after every kept (or macro-dropped) event.

The label is the argmax of the mean non-background probabilities over the event. An event
is known only when it closes, so latency >= (smoothing_frames / 2 + 1) frames.

A model with a ``macro`` class (:data:`MACRO_LABEL`: the face is in a macro-expression)
gets it counted as background in the score (``1 - p(background) - p(macro)``), never as an
event's label, and, with ``macro_veto`` < 1, it vetoes micro events: a micro-expression
event is dropped when the smoothed ``p(macro)`` exceeds ``macro_veto`` at any frame from its
onset until ``hold_ms`` after it closed (the first part of a macro-expression's rise looks
like a micro-expression; the rest of it does not). A held event is emitted ``hold_ms``
later; its ``closing_ts`` is then the frame that released it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from math import hypot
from operator import add
from typing import Any, SupportsFloat

import numpy as np

from edge_mer.errors import InputError
from edge_mer.pipeline.floats import np_argmax, np_sum

MICRO = "micro_expression"
MACRO = "macro_expression"
MACRO_LABEL = "macro"  # a model class: the face is in a macro-expression (background)

__all__ = ["MACRO", "MACRO_LABEL", "MICRO", "Event", "Spotter", "spotter_from_config"]


@dataclass
class Event:
    """One spotted expression. Times are seconds on the capture clock."""

    type: str  # MICRO | MACRO
    label: str
    score: float  # peak smoothed score (1 - p(background)) over the event, 0..1
    probs: dict[str, float]  # label -> mean probability over the event
    track: Hashable
    onset_ts: float
    apex_ts: float
    offset_ts: float
    closing_ts: float  # capture time of the frame that closed the event

    @property
    def duration_ms(self) -> float:
        return (self.offset_ts - self.onset_ts) * 1000.0

    def to_record(
        self,
        source: str,
        model_name: str,
        model_hash: str,
        emitted_ts: float,
        closing_capture_ts: float | None = None,
    ) -> dict[str, Any]:
        """The event record of DESIGN §6: exactly its keys, JSON-serialisable.

        ``emitted_ts`` must be on the capture clock; ``latency_ms`` is emitted_ts minus the
        capture time of the closing frame (``closing_capture_ts``, default the event's own).
        """
        closing = self.closing_ts if closing_capture_ts is None else closing_capture_ts
        track = self.track if isinstance(self.track, (int, str)) else str(self.track)
        return {
            "type": self.type,
            "label": self.label,
            "score": round(float(self.score), 6),
            "probs": {k: round(float(v), 6) for k, v in self.probs.items()},
            "track": track,
            "onset_ts": float(self.onset_ts),
            "apex_ts": float(self.apex_ts),
            "offset_ts": float(self.offset_ts),
            "duration_ms": round(self.duration_ms, 3),
            "emitted_ts": float(emitted_ts),
            "latency_ms": round((emitted_ts - closing) * 1000.0, 3),
            "source": source,
            "model": {"name": model_name, "hash": model_hash},
        }


class _Track:
    """Per-track state: rings of plain floats (indexing a list costs a fraction of reading
    a numpy scalar), allocated once; the running sums over an event are rebuilt, not
    updated in place, so they may be shared."""

    __slots__ = (
        "apex_score", "apex_ts", "baseline", "cand_n", "cand_onset", "cand_sum", "ev_n",
        "ev_sum", "in_event", "last_ts", "macro_max", "macro_ring", "macro_sum", "n",
        "onset_ts", "peak", "pending", "pending_max", "pending_until", "pos", "prev_center_ts",
        "probs_ring", "refractory_until", "score_ring", "score_sum", "ts_ring",
    )  # fmt: skip

    def __init__(self, window: int, k: int) -> None:
        self.score_ring = [0.0] * window
        self.ts_ring = [0.0] * window
        self.macro_ring = [0.0] * window  # p(macro) per frame (0.0 without a macro class)
        self.probs_ring = [[0.0] * k for _ in range(window)]
        self.ev_sum = [0.0] * k
        self.cand_sum = [0.0] * k
        self.score_sum = 0.0
        self.pos = 0
        self.n = 0
        self.last_ts = -math.inf
        self.baseline = math.nan
        self.in_event = False
        self.cand_onset = math.nan  # where the score last rose above off_threshold
        self.cand_n = 0
        self.ev_n = 0
        self.onset_ts = 0.0
        self.apex_ts = 0.0
        self.apex_score = -math.inf
        self.peak = 0.0
        self.prev_center_ts = 0.0
        self.refractory_until = -math.inf
        self.macro_sum = 0.0  # running sum of p(macro) over the smoothing window
        self.macro_max = 0.0  # the smoothed p(macro)'s maximum over the open event
        self.pending: Event | None = None  # a closed micro event held for hold_s
        self.pending_max = 0.0
        self.pending_until = 0.0


class Spotter:
    """Causal event builder for one stream; any number of tracks, keyed by ``track``.

    ``fps`` is the nominal rate of the probabilities (the model rate); buffers are sized
    in frames, the baseline and all durations in seconds of the capture clock. Not thread
    safe: call from the one thread that owns the model outputs.
    """

    def __init__(
        self,
        labels: Sequence[str],
        background: str | None = "none",
        fps: float = 30.0,
        smoothing_frames: int = 3,
        on_threshold: float = 0.3,
        off_threshold: float = 0.15,
        baseline_s: float = 2.0,
        min_ms: float = 40.0,
        max_micro_ms: float = 500.0,
        refractory_ms: float = 200.0,
        macro: str = "report",
        max_event_ms: float = 4000.0,
        macro_veto: float = 1.0,
        hold_ms: float = 0.0,
    ) -> None:
        self.labels = [str(x) for x in labels]
        if len(self.labels) < 2:
            raise InputError(f"spotter: need at least 2 labels, got {self.labels!r}")
        if background is not None and background not in self.labels:
            raise InputError(
                f"spotter: background label {background!r} is not one of {self.labels!r}; "
                "pass one of them, or background=None for a model without one"
            )
        if macro not in ("report", "drop"):
            raise InputError(f"spotter: macro={macro!r}; choose 'report' or 'drop'")
        if not fps > 0:
            raise InputError(f"spotter: fps must be > 0, got {fps!r}")
        if int(smoothing_frames) < 1:
            raise InputError(f"spotter: smoothing_frames must be >= 1, got {smoothing_frames!r}")
        if not 0 <= off_threshold <= on_threshold:
            raise InputError(
                f"spotter: need 0 <= off_threshold <= on_threshold, got "
                f"off={off_threshold!r} on={on_threshold!r}"
            )
        if not baseline_s > 0:
            raise InputError(f"spotter: baseline_s must be > 0, got {baseline_s!r}")
        if not 0 <= min_ms <= max_micro_ms <= max_event_ms:
            raise InputError(
                f"spotter: need 0 <= min_ms <= max_micro_ms <= max_event_ms, got "
                f"{min_ms!r}, {max_micro_ms!r}, {max_event_ms!r}"
            )
        if not 0.0 <= macro_veto <= 1.0:
            raise InputError(f"spotter: macro_veto must be in [0, 1], got {macro_veto!r}")
        if not hold_ms >= 0:
            raise InputError(f"spotter: hold_ms must be >= 0, got {hold_ms!r}")
        self.background = background
        self.fps = float(fps)
        self.window = int(smoothing_frames)
        self.on_threshold = float(on_threshold)
        self.off_threshold = float(off_threshold)
        self.baseline_s = float(baseline_s)
        self.min_s = min_ms / 1000.0
        self.max_micro_s = max_micro_ms / 1000.0
        self.max_event_s = max_event_ms / 1000.0
        self.refractory_s = refractory_ms / 1000.0
        self.macro = macro
        self._bg = self.labels.index(background) if background is not None else -1
        self._macro = self.labels.index(MACRO_LABEL) if MACRO_LABEL in self.labels else -1
        self._fg = np.array(
            [i for i in range(len(self.labels)) if i not in (self._bg, self._macro)],
            dtype=np.intp,
        )
        self._k = len(self.labels)
        self._fg_list: list[int] = self._fg.tolist()
        # The veto and the hold only mean something with a macro class.
        self.macro_veto = float(macro_veto) if self._macro >= 0 else 1.0
        self.hold_s = hold_ms / 1000.0 if self._macro >= 0 else 0.0
        self._tracks: dict[Hashable, _Track] = {}
        # Called with every update's arguments before anything else (spot-eval records the
        # probabilities through it); None: no call.
        self.tap: Callable[[Hashable, SupportsFloat, Any], None] | None = None
        self._center_lag = (self.window - 1) // 2
        self.skipped = 0  # frames ignored: non-finite probabilities or time going backwards
        self.dropped: dict[str, int] = {
            "too_short": 0,
            "macro": 0,
            "too_long": 0,
            "macro_veto": 0,
        }

    @property
    def tracks(self) -> list[Hashable]:
        return list(self._tracks)

    def forget(self, track: Hashable) -> None:
        """Drop a track's state (the face left); an open event is discarded."""
        self._tracks.pop(track, None)

    def update(self, track: Hashable, ts: SupportsFloat, probs: Any) -> list[Event]:
        """Feed one frame of ``track``: ``ts`` its capture time (s; any real number, kept as
        a float), ``probs`` float [K] (a numpy row, or a list or tuple of floats).

        Returns the events closed by this frame (almost always an empty list).
        """
        tap = self.tap
        if tap is not None:
            tap(track, ts, probs)
        t = float(ts)
        st = self._tracks.get(track)
        if st is None:
            st = self._tracks[track] = _Track(self.window, len(self.labels))
        if t <= st.last_ts:
            self.skipped += 1
            return []
        p = probs.tolist() if isinstance(probs, np.ndarray) else probs
        if len(p) != self._k:
            raise InputError(
                f"spotter: {len(p)} probabilities for {self._k} labels {self.labels!r}"
            )
        m = self._macro
        macro_p = p[m] if m >= 0 else 0.0
        bg = self._bg
        score = 1.0 - p[bg] - macro_p if bg >= 0 else max([p[i] for i in self._fg_list])
        # Probabilities are small and finite: then so are the score and their sum in any
        # float type (the norm bounds every element). Otherwise numpy's own sum decides,
        # as it always did (NaN, inf, or a float32 sum that would overflow).
        if not hypot(*p) < 1e30 and (
            not math.isfinite(score) or not math.isfinite(float(np.sum(probs)))
        ):
            self.skipped += 1
            return []
        dt = t - st.last_ts if st.n else 1.0 / self.fps
        st.last_ts = t

        w = self.window
        pos = st.pos
        if st.n >= w:
            st.score_sum -= st.score_ring[pos]
            st.macro_sum -= st.macro_ring[pos]
        st.score_ring[pos] = score
        st.ts_ring[pos] = t
        st.macro_ring[pos] = macro_p
        st.probs_ring[pos][:] = p
        st.score_sum += score
        st.macro_sum += macro_p
        n = st.n = st.n + 1
        st.pos = pos + 1 if pos + 1 < w else 0
        if st.pos == 0:  # no drift from +=/-= over hours: re-sum, as numpy would
            st.score_sum = np_sum(st.score_ring)
            if m >= 0:
                st.macro_sum = np_sum(st.macro_ring)
        if n < w:
            return []
        smooth = st.score_sum / w
        macro_level = st.macro_sum / w
        center = pos - self._center_lag
        if center < 0:
            center += w
        cts = st.ts_ring[center]

        if n == w or not math.isfinite(st.baseline):
            st.baseline = smooth
        level = smooth - st.baseline
        events: list[Event] = []
        if st.pending is not None:
            st.pending_max = max(st.pending_max, macro_level)
            if cts >= st.pending_until:
                self._release(st, t, events)

        if st.in_event:
            st.macro_max = max(st.macro_max, macro_level)
            if level >= self.off_threshold:
                st.ev_sum = list(map(add, st.ev_sum, st.probs_ring[center]))
                st.ev_n += 1
                if smooth > st.apex_score:
                    st.apex_score = smooth
                    st.apex_ts = cts
                st.prev_center_ts = cts
                if cts - st.onset_ts > self.max_event_s:
                    st.in_event = False
                    st.baseline = smooth  # a level shift: follow it
                    self.dropped["too_long"] += 1
            else:
                st.in_event = False
                self._hold_or_emit(self._close(track, st, t), st, cts, events)
            return events

        # Outside events: the baseline follows the score (causal, time-based EMA).
        alpha = 1.0 - math.exp(-min(dt, 1.0) / self.baseline_s)
        st.baseline += alpha * (smooth - st.baseline)
        level = smooth - st.baseline
        if level >= self.off_threshold:
            cprobs = st.probs_ring[center]
            if st.cand_n == 0:
                st.cand_onset = cts
                st.cand_sum = [0.0 + x for x in cprobs]
            else:
                st.cand_sum = list(map(add, st.cand_sum, cprobs))
            st.cand_n += 1
            if level >= self.on_threshold and cts >= st.refractory_until:
                st.in_event = True
                st.onset_ts = st.cand_onset
                st.ev_sum = st.cand_sum  # neither is changed in place
                st.ev_n = st.cand_n
                st.apex_score = smooth
                st.apex_ts = cts
                st.prev_center_ts = cts
                st.macro_max = macro_level
                st.cand_n = 0
        else:
            st.cand_n = 0
        return events

    def _hold_or_emit(self, ev: Event | None, st: _Track, cts: float, out: list[Event]) -> None:
        """A closed event: vetoed, held (a micro event while ``hold_s`` > 0) or emitted."""
        if ev is None:
            return
        if ev.type == MICRO and st.macro_max > self.macro_veto:
            self.dropped["macro_veto"] += 1
            return
        if ev.type == MICRO and self.hold_s > 0:
            if st.pending is not None:  # a newer event: the held one goes out first
                self._release(st, ev.closing_ts, out)
            st.pending, st.pending_max, st.pending_until = ev, 0.0, cts + self.hold_s
            return
        out.append(ev)

    def _release(self, st: _Track, ts: float, out: list[Event]) -> None:
        ev, st.pending = st.pending, None
        if ev is None:
            return
        if st.pending_max > self.macro_veto:
            self.dropped["macro_veto"] += 1
            return
        out.append(replace(ev, closing_ts=ts))

    def flush(self) -> list[Event]:
        """Close every open event (end of stream); the closing frame is each track's last.
        Held events go out as they are."""
        out: list[Event] = []
        for track, st in self._tracks.items():
            self._release(st, st.last_ts, out)
            if st.in_event:
                st.in_event = False
                ev = self._close(track, st, st.last_ts)
                if ev is not None and not (ev.type == MICRO and st.macro_max > self.macro_veto):
                    out.append(ev)
                elif ev is not None:
                    self.dropped["macro_veto"] += 1
        return out

    def _close(self, track: Hashable, st: _Track, closing_ts: float) -> Event | None:
        onset, offset = st.onset_ts, st.prev_center_ts
        duration = offset - onset
        if duration < self.min_s - 1e-9:
            self.dropped["too_short"] += 1
            return None
        st.refractory_until = offset + self.refractory_s
        kind = MICRO if duration <= self.max_micro_s + 1e-9 else MACRO
        if kind == MACRO and self.macro == "drop":
            self.dropped["macro"] += 1
            return None
        count = max(st.ev_n, 1)
        mean = [v / count for v in st.ev_sum]
        fg = self._fg_list
        label = self.labels[fg[np_argmax([mean[i] for i in fg])]]
        return Event(
            type=kind,
            label=label,
            score=min(max(st.apex_score, 0.0), 1.0),
            probs={name: float(p) for name, p in zip(self.labels, mean, strict=True)},
            track=track,
            onset_ts=onset,
            apex_ts=st.apex_ts,
            offset_ts=offset,
            closing_ts=closing_ts,
        )


def spotter_from_config(labels: Sequence[str], fps: float, sp: Any) -> Spotter:
    """The :class:`Spotter` of a ``[spotter]`` table (:class:`~edge_mer.config.models.
    SpotterConfig`) for a model with ``labels`` running at ``fps``; background ``none``
    when it is a label."""
    return Spotter(
        labels,
        background="none" if "none" in labels else None,
        fps=fps,
        smoothing_frames=sp.smoothing_frames,
        on_threshold=sp.threshold_on,
        off_threshold=sp.threshold_off,
        min_ms=sp.min_duration_ms,
        max_micro_ms=sp.max_duration_ms,
        refractory_ms=sp.refractory_ms,
        macro=sp.macro,
        macro_veto=sp.macro_veto,
        hold_ms=sp.hold_ms,
    )
