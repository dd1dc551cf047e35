"""Streaming state per face track, stepped in one batched call per frame (DESIGN §4).

The clip graph classifies the last ``window`` (T) frames starting from zero state. A single
state carried forever is not that, so each track keeps K = T / stride staggered *banks*: bank
``b`` restarts from zero every T frames at offset ``b * stride``. After every ``stride``-th frame
one bank has seen exactly the last T frames, and its logits equal ``clip.onnx`` on that window.

Cost per frame and track: one encoder row + K step rows, all tracks and banks in ONE batched
step call (vs T encoder rows for re-running a sliding window). ``stride`` trades that for
output rate: stride 1 -> K = T banks, an exact window result every frame; stride s -> T/s
banks (s times fewer step rows), a result every s-th frame (up to s - 1 frames later).

Memory: every track's banks live in ``[max_tracks * K, ...]`` arrays allocated once. A frame
gathers the tracks' rows into the step runner's bound state inputs (``np.take(..., out=)``),
runs the step, and leaves the next states where the runner's ping-pong put them. While the
same tracks arrive in the same order (steady state) the states stay resident in the runner
and nothing is gathered or scattered; they are written back to the cache arrays only when
the set of tracks changes. Nothing is allocated per frame in steady state.

Rotating banks (recurrent, stride 1, a runner with shifted state such as
:class:`~edge_mer.runners.ort.OrtStepRunner`): a track's bank at position ``b`` is the one that
has seen ``b`` frames. The rows are bank-major (``b * n + i`` for track ``i`` of ``n``) and the
runner writes each next state ``n`` rows further down (``infer(n * K, shift=n)``): every bank
moves up one position, position 0 reads zeros (the bank that restarts with this frame) and
the bank at ``K - 1``, whose window is complete, is the one whose logits come out (rows
``(K - 1) * n ..``, a view) and then falls off the end. No per-frame zeroing, restart
arithmetic or logits gather is left in Python. Other runners (TensorRT) and strides > 1 keep
the fixed banks above, track-major, with each bank's restart zeroed in the runner's input.

The per-frame bookkeeping (track lookups, expiry, gap resets, row indices) runs only when the
tracks of a frame differ from the previous frame's; a frame with the same tracks, in the same
order, within ``reset_gap_s`` of the last one and with no other track held, reuses it.

Window models (``state_kind="window"``, the bundle's ``state_kind``): the state after any T
steps depends only on those T frames (a key/value cache of the last w frames, a causal
convolution history, a feature ring), so ONE state row per track, never restarted, gives the
clip graph's result on the last T frames at every frame from the T-th on: one step row per
frame and track instead of T / stride. ``stride`` changes nothing for them.

Lifecycle per track id: a new id gets a free slot (the least recently seen track is evicted
when all are taken) and zero state; a track unseen for more than ``reset_gap_s`` restarts its
window on return; one unseen for more than ``ttl_s`` is evicted and its slot freed.

Not thread-safe: call from the inference thread that owns the step runner, and let no one
else call that runner's ``infer`` (its state inputs hold the resident states).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from edge_mer.bundle import STATE_KINDS, StateSpec
from edge_mer.errors import InputError
from edge_mer.runners.base import Runner, RunnerError

log = logging.getLogger(__name__)

__all__ = ["StateCache", "rows_per_track"]


def rows_per_track(state_kind: str, window: int, stride: int = 1) -> int:
    """Step rows a track needs per frame: ``window / stride`` banks for a recurrent state,
    1 for a window state. Size the step runner's ``max_batch`` as tracks x this."""
    return 1 if state_kind == "window" else int(window) // int(stride)


class StateCache:
    """Per-track streaming state (banked for recurrent models) over a batched step runner.

    Args:
        state_specs: the bundle's states (``Bundle.states``); shapes without the batch axis.
        max_tracks: tracks held at once.
        ttl_s: a track unseen this long (seconds, the ``now`` clock) is evicted.
        reset_gap_s: a track unseen longer than this restarts from zero state on return.
        step: the step runner (``OrtStepRunner`` / TensorRT step); its ``max_batch`` must be
            ``>= max_tracks * banks``. Dedicated to this cache; must be active while stepping.
        window: T, the frames the clip graph classifies (manifest ``input.window``).
        stride: frames between results; must divide ``window`` (recurrent models only).
        state_kind: ``"recurrent"`` (T / stride banks per track) or ``"window"`` (one row
            per track; ``Bundle.state_kind``).
    """

    def __init__(
        self,
        state_specs: Sequence[StateSpec],
        max_tracks: int,
        ttl_s: float = 2.0,
        reset_gap_s: float = 0.5,
        *,
        step: Runner,
        window: int,
        stride: int = 1,
        features_name: str = "features",
        logits_name: str = "logits",
        state_kind: str = "recurrent",
    ) -> None:
        if state_kind not in STATE_KINDS:
            raise InputError(f"state_kind {state_kind!r} is not one of {list(STATE_KINDS)}")
        if int(max_tracks) < 1:
            raise InputError(f"max_tracks {max_tracks!r} must be >= 1")
        if int(window) < 1 or int(stride) < 1 or int(window) % int(stride):
            raise InputError(
                f"stride {stride!r} must be >= 1 and divide the window {window!r} "
                f"(valid strides: {[s for s in range(1, int(window) + 1) if window % s == 0]})"
            )
        if not 0 <= reset_gap_s <= ttl_s:
            raise InputError(
                f"need 0 <= reset_gap_s ({reset_gap_s!r}) <= ttl_s ({ttl_s!r}), in seconds"
            )
        self.specs = list(state_specs)
        self.names = [s.name for s in self.specs]
        self.max_tracks = int(max_tracks)
        self.ttl_s = float(ttl_s)
        self.reset_gap_s = float(reset_gap_s)
        self.window = int(window)
        self.stride = int(stride)
        self.state_kind = state_kind
        self.banks = 1 if state_kind == "window" else self.window // self.stride
        self.step = step
        self.features_name = features_name
        self.logits_name = logits_name
        rows = self.max_tracks * self.banks
        if step.max_batch < rows:
            raise InputError(
                f"step runner max_batch {step.max_batch} < max_tracks * banks = "
                f"{self.max_tracks} * {self.banks}: rebuild/open it with max_batch >= {rows} "
                "or lower max_tracks / raise stride"
            )
        k = self.banks
        self._store = {s.name: np.zeros((rows, *s.shape), np.dtype(s.dtype)) for s in self.specs}
        self._slot_of: dict[Hashable, int] = {}
        self._track_of: list[Hashable | None] = [None] * self.max_tracks
        self._age = [0] * self.max_tracks  # frames stepped since the track (re)started
        self._stamp = [0] * self.max_tracks  # the step_batch call that last saw the slot
        self._frame = 0
        self._free = list(range(self.max_tracks - 1, -1, -1))
        self._last_seen = np.full(self.max_tracks, -np.inf)
        self._expired = np.zeros(self.max_tracks, bool)
        self._slots = np.zeros(self.max_tracks, np.intp)
        self._tmp = np.zeros(self.max_tracks, np.intp)
        self._bank_ar = np.arange(k, dtype=np.intp)
        self._rows = np.zeros(rows, np.intp)
        self._res_rows = np.zeros(rows, np.intp)
        self._res_n = 0  # rows resident in the runner's state inputs (0 = none)
        self._emit = np.zeros(self.max_tracks, np.intp)
        self._ready = np.zeros(self.max_tracks, bool)
        self._seen = np.zeros(self.max_tracks, np.int64)
        self._logits: np.ndarray | None = None
        self.stats = {"gathers": 0, "resident": 0, "resets": 0, "evictions": 0, "new": 0}
        # Rotating banks: see the module docstring. Needs one spare state row per track.
        self.rotating = (
            state_kind == "recurrent"
            and self.stride == 1
            and getattr(step, "state_spare_rows", 0) >= self.max_tracks
        )
        self._prev_ids: list[Hashable] = []  # the last frame's tracks, for the steady path
        self._prev_slots: list[int] = []
        self._prev_now = -np.inf
        self._copy: tuple[Any, ...] | None = None  # see _feature_copy

    # -- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, track_id: Hashable) -> bool:
        return track_id in self._slot_of

    def tracks(self) -> list[Hashable]:
        return list(self._slot_of)

    def age(self, track_id: Hashable) -> int:
        """Frames stepped since the track started or was last reset."""
        return self._age[self._slot_of[track_id]]

    def state(self, track_id: Hashable) -> dict[str, np.ndarray]:
        """Copies of the track's banks, name -> ``[banks, *shape]`` (debugging, tests)."""
        self._flush()
        base = self._slot_of[track_id] * self.banks
        return {n: a[base : base + self.banks].copy() for n, a in self._store.items()}

    @property
    def frames_seen(self) -> np.ndarray:
        """After :meth:`step_batch`: frames behind each returned logits row, ``[n]``."""
        return self._seen

    # -- lifecycle ---------------------------------------------------------------------

    def reset(self, track_id: Hashable) -> None:
        """Restart the track's window: zero state in every bank."""
        self._reset_slot(self._slot_of[track_id])

    def evict(self, track_id: Hashable) -> None:
        """Forget the track and free its slot."""
        self._evict_slot(self._slot_of[track_id])

    def expire(self, now: float) -> int:
        """Evict tracks unseen for more than ``ttl_s``; returns how many."""
        np.less(self._last_seen, now - self.ttl_s, out=self._expired)
        if not self._expired.any():
            return 0
        count = 0
        for slot in np.flatnonzero(self._expired).tolist():
            if self._track_of[slot] is not None:
                self._evict_slot(slot)
                count += 1
        return count

    def _reset_slot(self, slot: int) -> None:
        self._flush()
        base = slot * self.banks
        for a in self._store.values():
            a[base : base + self.banks] = 0
        self._age[slot] = 0
        self.stats["resets"] += 1

    def _evict_slot(self, slot: int) -> None:
        self._flush()
        track = self._track_of[slot]
        log.debug("evicting track %r from slot %d", track, slot)
        del self._slot_of[track]
        self._track_of[slot] = None
        self._last_seen[slot] = -np.inf
        self._free.append(slot)
        self.stats["evictions"] += 1

    def _admit(self, track_id: Hashable, now: float, taken: int) -> int:
        if not self._free:  # LRU: the least recently seen track not in this frame's batch
            order = np.argsort(self._last_seen, kind="stable").tolist()
            taken_slots = set(self._slots[:taken].tolist())
            self._evict_slot(next(s for s in order if s not in taken_slots))
        slot = self._free.pop()
        self._flush()
        self._slot_of[track_id] = slot
        self._track_of[slot] = track_id
        base = slot * self.banks
        for a in self._store.values():
            a[base : base + self.banks] = 0
        self._age[slot] = 0
        self.stats["new"] += 1
        return slot

    def _flush(self) -> None:
        """Write the states resident in the step runner back to the cache arrays."""
        n = self._res_n
        if n:
            rows = self._res_rows[:n]
            inputs = self.step.inputs
            for name, store in self._store.items():
                store[rows] = inputs[name][:n]
            self._res_n = 0

    # -- the frame step ----------------------------------------------------------------

    def step_batch(
        self, track_ids: Sequence[Hashable], features: np.ndarray, now: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance every listed track by one frame in one batched step call.

        Args:
            track_ids: the tracks seen in this frame, distinct, at most ``max_tracks``.
            features: ``[n, D]`` encoder features, row i for ``track_ids[i]`` (the encoder
                runner's output view is fine).
            now: capture time in seconds (default ``time.monotonic()``).

        Returns:
            ``(logits [n, K], ready [n])`` views owned by the cache or its step runner, valid
            until the next call: row i is the logits of track i's bank that has seen the most
            frames; ``ready[i]`` is True when that bank has seen exactly ``window`` frames (a
            window model's row: at least ``window``), i.e. the row equals the clip graph on the
            track's last ``window`` frames. :attr:`frames_seen` says how many.
        """
        n = len(track_ids)
        if now is None:
            now = time.monotonic()
        k = self.banks
        if (
            isinstance(track_ids, list)
            and n == len(self._prev_ids)
            and self._res_n == n * k
            and len(self._slot_of) == n
            and now - self._prev_now <= self.reset_gap_s
            and track_ids == self._prev_ids
        ):
            slots = self._prev_slots  # steady state: same tracks, states resident, no reset
            self.stats["resident"] += 1
            for slot in slots:
                self._last_seen[slot] = now
        else:
            slots = self._enter(track_ids, n, now)
        self._prev_now = now
        nk = n * k
        if self.rotating or k == 1:
            feats_in = self.step.inputs[self.features_name]
            copy = self._copy
            if copy is None or copy[0] is not features or copy[1] != n or copy[4] is not feats_in:
                copy = self._copy = self._feature_copy(features, n, feats_in)
            np.copyto(copy[2], copy[3])  # every bank of a track steps with its features
            if self.rotating:
                logits = self.step.infer(nk, shift=n)[self.logits_name][nk - n : nk]
            else:
                logits = self.step.infer(n)[self.logits_name]
        else:
            return self._step_fixed_banks(slots, n, features, self.step.inputs)
        # The emitted row has seen every frame since the (re)start, the last T of them count.
        t, age, seen, ready = self.window, self._age, self._seen, self._ready
        for i, slot in enumerate(slots):
            a = age[slot] + 1
            age[slot] = a
            seen[i] = a if a < t else t
            ready[i] = a >= t
        return logits, ready[:n]

    def _enter(self, track_ids: Sequence[Hashable], n: int, now: float) -> list[int]:
        """The bookkeeping of a frame whose tracks differ from the last one's: validate,
        expire, admit / reset, and gather the states into the runner unless resident.
        Returns the tracks' slots in order."""
        self._prev_ids.clear()
        self._prev_slots.clear()
        if not 1 <= n <= self.max_tracks:
            raise InputError(f"{n} tracks in one frame; the cache holds 1..{self.max_tracks}")
        self.expire(now)
        self._frame += 1
        slots = self._slots
        for i, tid in enumerate(track_ids):
            slot = self._slot_of.get(tid)
            if slot is None:
                slot = self._admit(tid, now, i)
            elif now - self._last_seen[slot] > self.reset_gap_s:
                self._reset_slot(slot)
            elif self._stamp[slot] == self._frame:
                raise InputError(f"track id {tid!r} appears twice in one frame")
            self._stamp[slot] = self._frame
            self._last_seen[slot] = now
            slots[i] = slot

        k = self.banks
        nk = n * k
        rows = self._rows[:nk]
        np.multiply(slots[:n], k, out=self._tmp[:n])
        if self.rotating:  # bank-major: row b * n + i
            np.add(self._tmp[None, :n], self._bank_ar[:, None], out=rows.reshape(k, n))
        else:  # track-major: row i * k + b
            np.add(self._tmp[:n, None], self._bank_ar, out=rows.reshape(n, k))
        inputs = self.step.inputs
        if self._res_n == nk and np.array_equal(rows, self._res_rows[:nk]):
            self.stats["resident"] += 1
        else:
            self._flush()
            for name, store in self._store.items():
                np.take(store, rows, axis=0, out=inputs[name][:nk])
            self._res_rows[:nk] = rows
            self._res_n = nk
            self.stats["gathers"] += 1
        self._prev_ids.extend(track_ids)
        self._prev_slots.extend(slots[:n].tolist())
        return self._prev_slots

    def _feature_copy(self, features: np.ndarray, n: int, feats_in: np.ndarray) -> tuple:
        """(features, n, destination, source, step input) for the copy of ``n`` tracks'
        features into the step input (bank-major for rotating banks), made once per pair of
        arrays (the encoder runner's output view is the same object every frame; a runner
        activated again has new buffers, and the views are made again)."""
        k = self.banks
        dst = feats_in[: n * k]
        if self.rotating:
            return features, n, dst.reshape(k, n, -1), features[None, :n], feats_in
        return features, n, dst, features[:n], feats_in

    def _step_fixed_banks(
        self, slots: list[int], n: int, features: np.ndarray, inputs: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Recurrent state in fixed, track-major banks (strides > 1, runners without shifted
        state): zero the bank that restarts with this frame, step, gather the emitted rows."""
        k, t, s = self.banks, self.window, self.stride
        nk = n * k
        state_in = [inputs[name] for name in self.names]
        for i, slot in enumerate(slots):
            a = self._age[slot]
            if a % s == 0:  # the bank whose window starts with this frame restarts from zero
                row = i * k + (a % t) // s
                for arr in state_in:
                    arr[row] = 0
        np.copyto(inputs[self.features_name][:nk].reshape(n, k, -1), features[:n, None, :])
        logits = self.step.infer(nk)[self.logits_name]
        if self._logits is None or self._logits.shape[1:] != logits.shape[1:]:
            self._logits = np.zeros((self.max_tracks, *logits.shape[1:]), logits.dtype)
        for i, slot in enumerate(slots):
            a = self._age[slot]
            j = (a + 1) % t
            b = (-(-j // s)) % k  # the bank whose next restart is furthest away
            seen = min(t - (b * s - j) % t, a + 1)
            self._emit[i] = i * k + b
            self._seen[i] = seen
            self._ready[i] = seen == t
            self._age[slot] = a + 1
        np.take(logits, self._emit[:n], axis=0, out=self._logits[:n])
        return self._logits[:n], self._ready[:n]

    def check_runner(self) -> None:
        """Raise unless the (active) step runner has this cache's state inputs and shapes."""
        inputs = self.step.inputs
        for spec in self.specs:
            arr = inputs.get(spec.name)
            if arr is None or tuple(arr.shape[1:]) != tuple(spec.shape):
                raise RunnerError(
                    f"step runner {self.step.name} has no state input {spec.name!r} of shape "
                    f"[N, {', '.join(map(str, spec.shape))}]; open the step graph of this bundle"
                )
