"""The frame ring between the capture thread and inference, and the capture thread.

:class:`FrameRing` holds ``capacity`` preallocated image slots. The producer copies each
frame INTO a free slot (no allocation per frame); when inference falls behind, the oldest
waiting frame is overwritten and counted in ``dropped``, so the consumer always gets the
newest frames. :class:`CaptureThread` reads a :class:`~edge_mer.pipeline.sources.Source` on its
own thread, feeds the ring, and reopens a lost camera with capped exponential backoff.

Ownership: ``get(timeout)`` hands the consumer a :class:`FrameSlot`; its ``image`` is a
view into the ring's buffer that stays valid, and untouched by the producer, until the
consumer passes the slot to ``release()``. Release every slot you get, promptly: a held
slot is one the producer cannot use (with every slot held, new frames are dropped).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from edge_mer.errors import EdgeMerError
from edge_mer.pipeline.sources import Source, SourceEnded, SourceLost

__all__ = ["CaptureStats", "CaptureThread", "FrameRing", "FrameSlot", "exponential_backoff"]

log = logging.getLogger(__name__)

_FREE, _READY, _HELD, _WRITING = 0, 1, 2, 3


class FrameSlot:
    """One slot of a :class:`FrameRing`: ``image`` (a view into the ring's buffer),
    ``seq`` and ``ts`` of the frame in it. Valid until ``ring.release(slot)``."""

    __slots__ = ("generation", "image", "index", "seq", "ts")

    def __init__(self, index: int, image: np.ndarray, generation: int) -> None:
        self.index = index
        self.image = image
        self.generation = generation
        self.seq = -1
        self.ts = 0.0

    def __repr__(self) -> str:
        return f"FrameSlot(index={self.index}, seq={self.seq}, ts={self.ts:.6f})"


class FrameRing:
    """``capacity`` preallocated slots of ``shape``/``dtype``, drop-oldest, thread-safe.

    One producer thread calls :meth:`put`, :meth:`reallocate` and :meth:`close`; any thread
    may call :meth:`get` / :meth:`release`. ``shape=None`` allocates on the first ``put``.
    """

    def __init__(
        self, capacity: int = 4, shape: tuple[int, ...] | None = None, dtype: type = np.uint8
    ) -> None:
        if int(capacity) < 2:
            raise ValueError(f"capacity={capacity!r}: need at least 2 slots")
        self.capacity = int(capacity)
        self.dtype = np.dtype(dtype)
        self.dropped = 0  # frames overwritten (oldest) or refused (every slot held)
        self.frames = 0  # frames put
        self._cond = threading.Condition()
        self._ready: deque[int] = deque(maxlen=self.capacity)
        self._state = [_FREE] * self.capacity
        self._slots: list[FrameSlot] = []
        self._buffer: np.ndarray | None = None
        self._generation = 0
        self._closed = False
        self._error: BaseException | None = None
        if shape is not None:
            self._allocate(tuple(shape))

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Image shape of the slots (None until allocated)."""
        return None if self._buffer is None else self._buffer.shape[1:]

    def __len__(self) -> int:
        """Frames waiting to be taken."""
        return len(self._ready)

    def _allocate(self, shape: tuple[int, ...]) -> None:
        self._buffer = np.zeros((self.capacity, *shape), self.dtype)
        self._generation += 1
        self._slots = [
            FrameSlot(i, self._buffer[i], self._generation) for i in range(self.capacity)
        ]
        self._state = [_FREE] * self.capacity
        self._ready.clear()

    def reallocate(self, shape: tuple[int, ...]) -> None:
        """New slots of ``shape``. Waiting frames are dropped (counted); slots the consumer
        still holds stay valid (they keep the old buffer alive) and their release is a no-op."""
        with self._cond:
            self.dropped += len(self._ready)
            self._allocate(tuple(shape))

    def put(self, image: np.ndarray, seq: int, ts: float) -> bool:
        """Copy ``image`` (exactly the ring's shape and dtype) into a slot. Returns False if
        it was dropped because the consumer holds every slot; overwriting the oldest waiting
        frame to make room returns True (and counts that one in ``dropped``)."""
        with self._cond:
            if self._closed:
                return False
            if self._buffer is None:
                self._allocate(image.shape)
            if image.shape != self._buffer.shape[1:]:  # type: ignore[union-attr]
                raise ValueError(f"frame shape {image.shape} != ring shape {self.shape}")
            index = self._free_index()
            if index < 0:
                self.dropped += 1
                return False
            self._state[index] = _WRITING
            slot = self._slots[index]
        # The copy runs outside the lock: nobody else touches a slot in _WRITING.
        np.copyto(slot.image, image, casting="unsafe")
        with self._cond:
            if slot.generation != self._generation:  # pragma: no cover - producer-only calls
                return False
            slot.seq, slot.ts = seq, ts
            self._state[index] = _READY
            self._ready.append(index)
            self.frames += 1
            self._cond.notify()
        return True

    def _free_index(self) -> int:
        for i, state in enumerate(self._state):
            if state == _FREE:
                return i
        if self._ready:
            self.dropped += 1
            return self._ready.popleft()
        return -1

    def get(self, timeout: float | None) -> FrameSlot | None:
        """The oldest waiting frame, or None if none arrives within ``timeout`` seconds.
        After :meth:`close`, waiting frames are still returned, then :class:`SourceEnded`
        (or the error the ring was closed with) is raised."""
        with self._cond:
            if not self._ready and not self._closed:
                self._cond.wait_for(lambda: self._ready or self._closed, timeout)
            if self._ready:
                index = self._ready.popleft()
                self._state[index] = _HELD
                return self._slots[index]
            if self._closed:
                raise self._error if self._error is not None else SourceEnded("stream ended")
            return None

    def release(self, slot: FrameSlot) -> None:
        """Give a slot from :meth:`get` back to the producer (a no-op for a stale slot)."""
        with self._cond:
            if slot.generation == self._generation and self._state[slot.index] == _HELD:
                self._state[slot.index] = _FREE
                self._cond.notify_all()  # a producer may wait for space (finite sources)

    def wait_for_space(self, timeout: float) -> bool:
        """Block until a slot is free (True) or ``timeout`` passes (False). For finite
        sources (files, synthetic streams), where dropping frames would change results."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or self._buffer is None or _FREE in self._state, timeout
            )

    def close(self, error: BaseException | None = None) -> None:
        """No more frames: ``get`` drains what is waiting, then raises ``error`` or
        :class:`SourceEnded`."""
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()


def exponential_backoff(
    initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0, jitter: float = 0.1
) -> Iterator[float]:
    """Delays in seconds: ``initial``, doubling up to ``maximum``, each times a random
    ``1 ± jitter`` so that many devices do not retry in lockstep. Endless."""
    delay = initial
    while True:
        yield delay * (1.0 + jitter * (2.0 * random.random() - 1.0))
        delay = min(delay * factor, maximum)


Backoff = Callable[[], Iterable[float]] | Iterable[float]


def _delays(backoff: Backoff) -> Iterator[float]:
    """One outage's delays; the last one repeats if the iterable runs out."""
    last = 1.0
    for last in backoff() if callable(backoff) else backoff:
        yield float(last)
    while True:
        yield float(last)


@dataclass(frozen=True)
class CaptureStats:
    """A snapshot of a :class:`CaptureThread`. ``state`` is "starting", "streaming",
    "waiting for camera", "ended", "failed" or "stopped"; ``heartbeat`` is the
    ``time.monotonic()`` of the loop's last turn (it turns while streaming and while
    retrying, so a daemon can tell a stuck read from a camera it is waiting for)."""

    state: str
    frames: int  # frames put into the ring
    drops: int  # frames the ring dropped (inference behind) + frames of a bad shape
    reconnects: int  # successful opens after a failed open or a lost device
    open_failures: int
    timeouts: int  # reads that returned no frame within their deadline
    bad_frames: int  # frames whose shape or dtype did not match the ring
    reshapes: int  # times the ring was reallocated for a new frame size
    source_errors: int  # frames the source could not decode
    stale: int  # frames whose timestamp did not advance (a camera repeating itself)
    heartbeat: float
    error: str | None


class CaptureThread:
    """Reads ``source`` on a daemon thread into ``ring`` (or a new ``FrameRing(capacity)``
    sized from the first frame). Consumers call :meth:`get` / :meth:`release`.

    A :class:`SourceLost` (on open or read) closes the source and reopens it after the
    delays from ``backoff`` (a callable returning an iterable of seconds, called once per
    outage, or an iterable; default :func:`exponential_backoff`, 1 s doubling to 60 s).
    :class:`SourceEnded` ends the thread and the ring; any other error on open (bad URI,
    missing GStreamer) fails it, and :meth:`get` raises that error.

    A frame whose size differs from the ring's (the camera changed resolution) is counted
    in ``bad_frames``; the ring is reallocated for it, with a warning, at most
    ``max_reshapes`` times; later odd-sized frames are dropped (counted) so that a flapping
    camera cannot make the ring allocate per frame.
    """

    def __init__(
        self,
        source: Source,
        ring: FrameRing | None = None,
        *,
        capacity: int = 4,
        backoff: Backoff | None = None,
        read_timeout: float = 0.5,
        max_reshapes: int = 3,
        name: str | None = None,
    ) -> None:
        self.source = source
        self.ring = ring if ring is not None else FrameRing(capacity)
        self.read_timeout = float(read_timeout)
        self.max_reshapes = int(max_reshapes)
        self._backoff: Backoff = backoff if backoff is not None else exponential_backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=name or f"capture {source.uri}", daemon=True
        )
        self._log = log.getChild(name or "capture")
        self.state = "starting"
        self.error: BaseException | None = None
        self.frames = self.reconnects = self.open_failures = self.timeouts = 0
        self.bad_frames = self.reshapes = self.stale = 0
        self._last_ts = -float("inf")
        self.heartbeat = time.monotonic()

    # -- consumer side ------------------------------------------------------------------
    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def get(self, timeout: float | None) -> FrameSlot | None:
        """Next frame slot, None on timeout; raises SourceEnded at the end (or the error
        that failed the thread). Release the slot with :meth:`release`."""
        return self.ring.get(timeout)

    def release(self, slot: FrameSlot) -> None:
        self.ring.release(slot)

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` s. False if it is stuck in a
        blocking read (it is a daemon thread: it will not keep the process alive)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._log.warning("capture thread did not stop within %.1f s (blocked read)", timeout)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> CaptureStats:
        return CaptureStats(
            state=self.state,
            frames=self.frames,
            drops=self.ring.dropped + self.bad_frames - self.reshapes,
            reconnects=self.reconnects,
            open_failures=self.open_failures,
            timeouts=self.timeouts,
            bad_frames=self.bad_frames,
            reshapes=self.reshapes,
            source_errors=int(getattr(self.source, "errors", 0)),
            stale=self.stale,
            heartbeat=self.heartbeat,
            error=None if self.error is None else str(self.error),
        )

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- capture thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never die silently: the consumer sees it on get()
            self._log.exception("capture thread crashed")
            self._finish("failed", exc)
        finally:
            try:
                self.source.close()
            except Exception:
                self._log.exception("closing %s failed", self.source.uri)
            if self.state not in ("ended", "failed"):
                self._finish("stopped", None)

    def _finish(self, state: str, error: BaseException | None) -> None:
        self.state, self.error = state, error
        self.ring.close(error)

    def _loop(self) -> None:
        delays: Iterator[float] | None = None  # set while a camera is missing
        is_open = False
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if not is_open:
                try:
                    self.source.open()
                except SourceLost as exc:
                    self.open_failures += 1
                    if delays is None:
                        delays = _delays(self._backoff)
                    delay = next(delays)
                    self.state = "waiting for camera"
                    self._log.warning("%s; retrying in %.1f s", exc, delay)
                    self._stop.wait(delay)
                    continue
                except SourceEnded:
                    self._finish("ended", None)
                    return
                except Exception as exc:
                    self._log.error("cannot open %s: %s", self.source.uri, exc)
                    self._finish("failed", exc)
                    return
                if delays is not None:
                    self.reconnects += 1
                    self._log.info("%s is back", self.source.uri)
                delays, is_open, self.state = None, True, "streaming"
            try:
                frame = self.source.read(self.read_timeout)
            except SourceEnded:
                self._finish("ended", None)
                return
            except SourceLost as exc:
                self._log.warning("%s", exc)
                self.source.close()
                is_open, self.state = False, "waiting for camera"
                delays = _delays(self._backoff)
                continue
            except EdgeMerError as exc:
                self._finish("failed", exc)
                return
            except Exception as exc:  # a backend error (cv2.error, OSError) mid-stream
                if not self.source.live:
                    raise
                self._log.warning("%s: read failed (%s); reopening", self.source.uri, exc)
                self.source.close()
                is_open, self.state = False, "waiting for camera"
                delays = _delays(self._backoff)
                continue
            if frame is None:
                self.timeouts += 1
                continue
            if frame.ts <= self._last_ts:
                self.stale += 1
            self._last_ts = frame.ts
            self._put(frame.image, frame.seq, frame.ts)

    def _put(self, image: np.ndarray, seq: int, ts: float) -> None:
        ring = self.ring
        if ring.shape is not None and (image.shape != ring.shape or image.dtype != ring.dtype):
            self.bad_frames += 1
            if image.dtype != ring.dtype or self.reshapes >= self.max_reshapes:
                if self.bad_frames & (self.bad_frames - 1) == 0:  # log 1, 2, 4, 8, ...
                    self._log.warning(
                        "dropping frame %d: %s %s, ring holds %s %s (%d such frames)",
                        seq, image.shape, image.dtype, ring.shape, ring.dtype, self.bad_frames,
                    )  # fmt: skip
                return
            self._log.warning(
                "frame size changed %s -> %s at frame %d: reallocating the ring",
                ring.shape, image.shape, seq,
            )  # fmt: skip
            self.reshapes += 1
            ring.reallocate(image.shape)
        if not self.source.live:
            # A file is not a camera: wait for the consumer instead of dropping frames.
            while not ring.wait_for_space(0.2) and not self._stop.is_set():
                pass
        if ring.put(image, seq, ts):
            self.frames += 1
