"""Camera fps -> model fps, by seconds.

A model trained at 50 fps must see one frame every 20 ms whatever the camera delivers
(micro-expressions last 40-500 ms, so counting frames instead of seconds would stretch or
squeeze them). :class:`FrameResampler` lays a grid of model ticks ``t0 + k / model_fps``
over the capture timestamps and tells, for each arriving frame, how many ticks it fills:

- camera faster than the model: most frames fill 0 ticks (skip them) and the frame
  nearest each tick fills 1;
- camera slower than the model: a frame fills 2 or more ticks, i.e. it is repeated
  (sample-and-hold), so the recurrent state still advances at the model's rate;
- a gap longer than ``max_gap`` seconds (camera stall, reconnect) restarts the grid at
  the new frame instead of repeating one frame for the whole gap; it is counted in
  ``gaps`` and :attr:`FrameResampler.restarted` tells the caller to reset its state;
- a timestamp that does not advance (duplicate or backwards) is skipped and counted;
- one frame never fills more than :attr:`FrameResampler.max_ticks` ticks (what a gap of
  ``max_gap`` can need, at most :data:`MAX_TICKS_PER_FRAME`): a frame that would is
  handled as a gap, so no timestamp can make the frame loop spin inside one frame.

Causal, no look-ahead: a frame takes every pending tick up to ``ts + interval / 2``, where
``interval`` is the camera's frame interval (a running median-free estimate: an
exponential average of recent positive intervals). With regular timestamps that is
exactly the frame nearest each tick; jitter smaller than half an interval does not change
the choice of frame, only which one of two near-equidistant frames wins a tie.
"""

from __future__ import annotations

import math

__all__ = ["MAX_TICKS_PER_FRAME", "FrameResampler"]

#: The most model ticks one camera frame may fill, whatever the rates.
MAX_TICKS_PER_FRAME = 4096


class FrameResampler:
    """Stateful: feed every captured frame's timestamp (seconds) to :meth:`push`, in order."""

    def __init__(self, model_fps: float, max_gap: float = 0.5, smoothing: float = 0.1) -> None:
        if not (math.isfinite(model_fps) and model_fps > 0):
            raise ValueError(f"model_fps={model_fps!r}: must be > 0")
        self.model_fps = float(model_fps)
        self.period = 1.0 / self.model_fps
        self.max_gap = float(max_gap)
        self.smoothing = float(smoothing)
        # A frame within max_gap of the last one fills at most (gap + interval/2) * fps
        # ticks, interval <= max_gap: more means a broken clock, handled as a gap.
        need = math.ceil(1.5 * self.max_gap * self.model_fps) + 1
        self.max_ticks = max(1, min(MAX_TICKS_PER_FRAME, need))
        self.reset()

    def reset(self) -> None:
        """Forget the grid and the camera interval; the next frame starts a new grid."""
        self._t0: float | None = None
        self._next = 0  # index of the next model tick not yet filled
        self._last_ts: float | None = None
        self.interval = 0.0  # estimated camera frame interval, seconds (0 = unknown yet)
        self.restarted = False
        self.kept = self.skipped = self.repeated = self.gaps = self.backwards = 0

    def tick_ts(self, k: int) -> float:
        """Time of model tick ``k`` (seconds, capture clock)."""
        return self._t0 + k * self.period  # type: ignore[operator]

    @property
    def next_tick(self) -> int:
        """Index of the next model tick to fill; ticks filled so far are ``0 .. next_tick-1``."""
        return self._next

    def push(self, ts: float) -> int:
        """How many model ticks the frame captured at ``ts`` fills: 0 = skip it, 1 = use it
        once, n > 1 = use it n times in a row. Sets :attr:`restarted` when this frame
        starts a new grid (first frame, or after a gap)."""
        self.restarted = False
        last = self._last_ts
        if last is not None and not ts > last:
            self.backwards += 1
            self.skipped += 1
            return 0
        if last is not None and ts - last <= self.max_gap:
            dt = ts - last
            interval = (
                dt
                if self.interval == 0.0
                else self.interval + self.smoothing * (dt - self.interval)
            )
            # Ticks at or before ts + interval/2 are nearer to this frame than to the next one.
            horizon = ts + 0.5 * interval - self._t0  # type: ignore[operator]
            count = max(0, math.floor(horizon * self.model_fps + 1e-9) + 1 - self._next)
            if count <= self.max_ticks:
                self.interval, self._last_ts = interval, ts
                self._next += count
                if count == 0:
                    self.skipped += 1
                else:
                    self.kept += 1
                    self.repeated += count - 1
                return count
            # More ticks than a gap of max_gap can need: a broken clock, handled as a gap.
        if last is not None:
            self.gaps += 1
        self._t0, self._next, self._last_ts = ts, 1, ts
        self.restarted = True
        self.kept += 1
        return 1
