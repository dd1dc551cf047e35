"""A finite source read on the inference thread: no capture thread, no ring, no copy.

A video file, a frame folder or a synthetic stream is not a camera. Nothing is dropped when
inference falls behind (the capture thread waits for the consumer) and there is no frame
deadline, so handing each frame from a capture thread to the inference thread buys nothing
but the hand-off itself: a copy into a ring slot, a lock and a condition wake-up on each side,
and the GIL changing hands around every call that releases it (OpenCV, ONNX Runtime). On the
demo bundle that hand-off cost about 30 us a frame, as much as everything else around the
model (``benchmarks/README.md``).

:class:`InlineCapture` has the consumer side of :class:`~edge_mer.pipeline.ring.CaptureThread`
(``start``, ``get``, ``release``, ``stop``, ``stats``) and reads the source inside ``get``.
The slot's ``image`` is the source's own array, valid until the next ``get``. Live sources
(cameras) keep the capture thread: a camera's frames must be taken when they come.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from edge_mer.pipeline.ring import Backoff, CaptureStats, FrameSlot, _delays, exponential_backoff
from edge_mer.pipeline.sources import Source, SourceEnded, SourceLost

__all__ = ["InlineCapture"]

log = logging.getLogger(__name__)


class InlineCapture:
    """Reads ``source`` when the consumer asks for a frame.

    Errors surface on :meth:`get`, as with the capture thread: a source that cannot be opened
    raises its error there, :class:`SourceEnded` ends the stream (and is raised again by later
    calls), and a :class:`SourceLost` closes the source and reopens it after the delays from
    ``backoff`` (the calls in between return None after waiting at most their timeout).
    """

    def __init__(
        self, source: Source, *, backoff: Backoff | None = None, name: str | None = None
    ) -> None:
        self.source = source
        self._backoff: Backoff = backoff if backoff is not None else exponential_backoff
        self._log = log.getChild(name or "inline")
        self._slot = FrameSlot(0, None, 0)  # type: ignore[arg-type]
        self._open = False
        self._delays: Iterator[float] | None = None  # set while the source is lost
        self._retry_at = 0.0
        self._end: BaseException | None = None
        self.state = "starting"
        self.error: BaseException | None = None
        self.frames = self.reconnects = self.open_failures = self.timeouts = self.stale = 0
        self._last_ts = -float("inf")
        self.heartbeat = time.monotonic()

    # -- the consumer side of CaptureThread ---------------------------------------------
    def start(self) -> InlineCapture:
        return self

    def get(self, timeout: float | None) -> FrameSlot | None:
        """The next frame, None if none came within ``timeout`` seconds (a paced source,
        a lost one waiting to be reopened). Raises at the end of the stream."""
        self.heartbeat = time.monotonic()
        if self._end is not None:
            raise self._end
        wait = 0.5 if timeout is None else max(float(timeout), 0.0)
        if not self._open and not self._reopen(wait):
            return None
        try:
            frame = self.source.read(wait)
        except SourceEnded as exc:
            self._finish("ended", None, exc)
            raise
        except SourceLost as exc:
            self._lost(exc)
            return None
        except BaseException as exc:
            self._finish("failed", exc, exc)
            raise
        if frame is None:
            self.timeouts += 1
            return None
        if frame.ts <= self._last_ts:
            self.stale += 1
        self._last_ts = frame.ts
        self.frames += 1
        slot = self._slot
        slot.image, slot.seq, slot.ts = frame.image, frame.seq, frame.ts
        return slot

    def release(self, slot: FrameSlot) -> None:
        """Nothing to give back: the next :meth:`get` replaces the image."""

    def stop(self, timeout: float = 2.0) -> bool:
        """Close the source (idempotent)."""
        try:
            self.source.close()
        except Exception:
            self._log.exception("closing %s failed", self.source.uri)
        self._open = False
        if self.state not in ("ended", "failed"):
            self.state = "stopped"
        return True

    @property
    def alive(self) -> bool:
        return self.state in ("starting", "streaming", "waiting for camera")

    def stats(self) -> CaptureStats:
        return CaptureStats(
            state=self.state,
            frames=self.frames,
            drops=0,
            reconnects=self.reconnects,
            open_failures=self.open_failures,
            timeouts=self.timeouts,
            bad_frames=0,
            reshapes=0,
            source_errors=int(getattr(self.source, "errors", 0)),
            stale=self.stale,
            heartbeat=self.heartbeat,
            error=None if self.error is None else str(self.error),
        )

    def __enter__(self) -> InlineCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- opening, losing, ending ----------------------------------------------------------
    def _reopen(self, wait: float) -> bool:
        """Open the source (now, or once its retry delay has passed); False if not open."""
        if self._delays is not None:
            left = self._retry_at - time.monotonic()
            if left > 0:
                time.sleep(min(left, wait))
                if left > wait:
                    return False
        try:
            self.source.open()
        except SourceLost as exc:
            self.open_failures += 1
            self._lost(exc)
            return False
        except SourceEnded as exc:
            self._finish("ended", None, exc)
            raise
        except BaseException as exc:
            self._log.error("cannot open %s: %s", self.source.uri, exc)
            self._finish("failed", exc, exc)
            raise
        if self._delays is not None:
            self.reconnects += 1
            self._log.info("%s is back", self.source.uri)
        self._open, self._delays, self.state = True, None, "streaming"
        return True

    def _lost(self, exc: SourceLost) -> None:
        if self._open:
            self._log.warning("%s", exc)
            self.source.close()
            self._open = False
        if self._delays is None:
            self._delays = _delays(self._backoff)
        delay = next(self._delays)
        self._retry_at = time.monotonic() + delay
        self.state = "waiting for camera"
        self._log.warning("%s; retrying in %.1f s", exc, delay)

    def _finish(self, state: str, error: BaseException | None, raised: BaseException) -> None:
        self.state, self.error = state, error
        self._end = raised
        try:
            self.source.close()
        except Exception:
            self._log.exception("closing %s failed", self.source.uri)
        self._open = False
