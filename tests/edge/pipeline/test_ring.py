"""FrameRing (drop-oldest, ownership, no allocation) and CaptureThread (reconnect, stop)."""

from __future__ import annotations

import itertools
import threading
import time
import tracemalloc

import numpy as np
import pytest

from edge_mer.errors import InputError
from edge_mer.pipeline.ring import CaptureThread, FrameRing, exponential_backoff
from edge_mer.pipeline.sources import Frame, SourceEnded, SourceLost


def img(value: int, shape=(4, 6)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_ring_fifo_and_drop_oldest():
    ring = FrameRing(3, (4, 6))
    for i in range(5):
        assert ring.put(img(i), i, i * 0.1)
    assert ring.dropped == 2 and ring.frames == 5 and len(ring) == 3
    got = []
    while (slot := ring.get(0)) is not None:
        got.append((slot.seq, int(slot.image[0, 0]), slot.ts))
        ring.release(slot)
    assert got == [(2, 2, 0.2), (3, 3, pytest.approx(0.3)), (4, 4, 0.4)]


def test_held_slot_is_never_overwritten():
    ring = FrameRing(2, (4, 6))
    ring.put(img(1), 1, 0.0)
    held = ring.get(0)
    for i in range(2, 10):
        ring.put(img(i), i, 0.0)
    assert int(held.image.min()) == 1 and held.seq == 1  # producer kept off the held slot
    other = ring.get(0)
    assert other.seq == 9
    assert not ring.put(img(10), 10, 0.0)  # every slot held: the new frame is dropped
    dropped = ring.dropped
    ring.release(held)
    ring.release(other)
    assert ring.put(img(11), 11, 0.0) and ring.dropped == dropped


def test_get_times_out_and_close_drains_then_ends():
    ring = FrameRing(2, (2, 2))
    t = time.monotonic()
    assert ring.get(0.05) is None
    assert 0.04 <= time.monotonic() - t < 0.5
    ring.put(img(1, (2, 2)), 0, 0.0)
    ring.close()
    assert ring.get(1.0).seq == 0
    with pytest.raises(SourceEnded):
        ring.get(1.0)
    boom = FrameRing(2, (2, 2))
    boom.close(InputError("bad"))
    with pytest.raises(InputError, match="bad"):
        boom.get(0)


def test_get_wakes_on_put_from_another_thread():
    ring = FrameRing(2, (2, 2))
    threading.Timer(0.05, ring.put, (img(3, (2, 2)), 7, 1.5)).start()
    slot = ring.get(2.0)
    assert slot is not None and slot.seq == 7 and slot.ts == 1.5


def test_lazy_shape_and_reallocate_keeps_held_views():
    ring = FrameRing(2)
    ring.put(img(1, (3, 3, 3)), 0, 0.0)
    assert ring.shape == (3, 3, 3)
    held = ring.get(0)
    ring.put(img(2, (3, 3, 3)), 1, 0.0)
    ring.reallocate((5, 5))
    assert ring.dropped == 1 and int(held.image[0, 0, 0]) == 1
    ring.release(held)  # stale slot: a no-op
    ring.put(img(9, (5, 5)), 2, 0.0)
    assert ring.get(0).image.shape == (5, 5)
    with pytest.raises(ValueError, match="shape"):
        ring.put(img(0, (3, 3)), 3, 0.0)


def test_steady_state_does_not_allocate():
    ring = FrameRing(4, (120, 160, 3))
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)

    def cycle(n):
        for i in range(n):
            ring.put(frame, i, float(i))
            ring.put(frame, i, float(i))
            slot = ring.get(0)
            ring.release(slot)

    cycle(50)  # warm-up
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cycle(300)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert growth < 4096, growth  # one frame is 57 600 bytes: not one was allocated
    assert ring.dropped > 0


class FakeSource:
    """A live source whose open() fails ``fail_opens`` times, then yields ``frames``
    frames, then is lost once (``lose_after``), then blocks or ends."""

    live = True

    def __init__(self, fail_opens=0, frames=5, lose_after=None, end=True, shape=(4, 6)):
        self.uri = "fake://0"
        self.fps = 30.0
        self.fail_opens, self.frames, self.lose_after, self.end = (
            fail_opens,
            frames,
            lose_after,
            end,
        )
        self.opens = self.closes = self.seq = 0
        self.shape = shape
        self.shapes: dict[int, tuple] = {}
        self.open_times: list[float] = []

    def open(self):
        self.open_times.append(time.monotonic())
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise SourceLost("fake camera not there")
        self.opens += 1

    def read(self, timeout):
        if self.lose_after is not None and self.seq == self.lose_after:
            self.lose_after = None
            raise SourceLost("fake camera unplugged")
        if self.seq >= self.frames:
            if self.end:
                raise SourceEnded("done")
            time.sleep(timeout)
            return None
        seq = self.seq
        self.seq += 1
        return Frame(seq, seq / 30.0, img(seq % 256, self.shapes.get(seq, self.shape)))

    def close(self):
        self.closes += 1


def drain(capture, timeout=5.0):
    seqs = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            slot = capture.get(0.5)
        except SourceEnded:
            return seqs
        if slot is not None:
            seqs.append(slot.seq)
            capture.release(slot)
    raise AssertionError("capture did not end")


def test_capture_reconnects_with_backoff_after_two_failures():
    delays = []

    def backoff():
        for d in (0.02, 0.04, 0.08):
            delays.append(d)
            yield d

    source = FakeSource(fail_opens=2, frames=6)
    capture = CaptureThread(source, FrameRing(8), backoff=backoff)
    with capture:
        seqs = drain(capture)
    assert seqs == list(range(6))
    assert delays == [0.02, 0.04]
    gaps = np.diff(source.open_times)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04
    stats = capture.stats()
    assert stats.state == "ended" and stats.reconnects == 1 and stats.open_failures == 2
    assert stats.frames == 6 and source.closes >= 1


def test_capture_reopens_a_lost_device_and_keeps_counting():
    source = FakeSource(frames=6, lose_after=3)
    capture = CaptureThread(source, FrameRing(8), backoff=[0.01])
    with capture:
        assert drain(capture) == list(range(6))
    assert capture.stats().reconnects == 1 and source.opens == 2


def test_capture_reports_waiting_then_stops_within_deadline():
    source = FakeSource(fail_opens=10**9)
    capture = CaptureThread(source, backoff=itertools.repeat(0.05)).start()
    time.sleep(0.2)
    assert capture.stats().state == "waiting for camera"
    assert capture.stats().open_failures >= 2
    t = time.monotonic()
    assert capture.stop(timeout=1.0)
    assert time.monotonic() - t < 0.5
    assert capture.stats().state == "stopped"


def test_stop_while_streaming_and_a_long_backoff():
    source = FakeSource(frames=2, end=False)
    capture = CaptureThread(source, read_timeout=0.05).start()
    assert drain_some(capture, 2) == [0, 1]
    t = time.monotonic()
    assert capture.stop(1.0) and time.monotonic() - t < 0.5
    slow = CaptureThread(FakeSource(fail_opens=5), backoff=[30.0]).start()
    time.sleep(0.05)
    t = time.monotonic()
    assert slow.stop(1.0) and time.monotonic() - t < 0.5  # the backoff wait is interruptible


def drain_some(capture, n):
    seqs = []
    while len(seqs) < n:
        slot = capture.get(2.0)
        assert slot is not None
        seqs.append(slot.seq)
        capture.release(slot)
    return seqs


def test_stop_reports_a_stuck_read():
    release = threading.Event()

    class Stuck(FakeSource):
        def read(self, timeout):
            release.wait()  # OpenCV's read() blocking forever
            raise SourceEnded("gone")

    capture = CaptureThread(Stuck()).start()
    time.sleep(0.05)
    assert not capture.stop(0.1)
    release.set()


def test_input_error_on_open_fails_and_get_raises_it():
    class Bad(FakeSource):
        def open(self):
            raise InputError("cv2 has no GStreamer support")

    capture = CaptureThread(Bad()).start()
    with pytest.raises(InputError, match="GStreamer"):
        capture.get(2.0)
    assert capture.stats().state == "failed"


def test_frame_size_change_reallocates_once_then_drops():
    source = FakeSource(frames=8)
    source.shapes = {3: (8, 8), 4: (8, 8), 5: (4, 6), 6: (8, 8), 7: (2, 2)}
    capture = CaptureThread(source, FrameRing(16), max_reshapes=1).start()
    capture._thread.join(5.0)  # let it finish first so the drops are deterministic
    seqs = drain(capture)
    stats = capture.stats()
    assert stats.bad_frames == 3 and stats.reshapes == 1  # 3 (realloc), 5 and 7 (dropped)
    assert seqs == [3, 4, 6]  # frames 0-2 were waiting in the old shape: dropped at realloc
    assert stats.drops == 3 + 2 and capture.ring.shape == (8, 8) and stats.state == "ended"


def test_stale_timestamps_are_counted():
    class Repeating(FakeSource):
        def read(self, timeout):
            frame = super().read(timeout)
            frame.ts = 1.0 if frame.seq >= 2 else frame.ts  # the camera keeps the last frame
            return frame

    capture = CaptureThread(Repeating(frames=5), FrameRing(8)).start()
    assert drain(capture) == [0, 1, 2, 3, 4]
    assert capture.stats().stale == 2


def test_default_backoff_is_capped_exponential_with_jitter():
    delays = list(itertools.islice(exponential_backoff(1.0, 60.0, jitter=0.1), 10))
    assert 0.9 <= delays[0] <= 1.1 and 1.8 <= delays[1] <= 2.2
    assert all(54 <= d <= 66 for d in delays[6:])
    assert len({round(d, 6) for d in delays}) == 10  # jitter: not lockstep
