"""InlineCapture: a finite source read on the consumer's thread, with CaptureThread's
consumer interface (errors on get, end, reconnect with backoff, stats), and which sources
the live pipeline reads that way."""

from __future__ import annotations

import time

import pytest

from edge_mer.errors import InputError
from edge_mer.pipeline.inline import InlineCapture
from edge_mer.pipeline.live import reads_inline
from edge_mer.pipeline.sources import SourceEnded, make_source
from tests.edge.pipeline.test_ring import FakeSource, drain


class FileLike(FakeSource):
    live = False


def test_frames_are_the_sources_own_arrays_in_order_then_the_end_repeats() -> None:
    source = FileLike(frames=5)
    images = []
    original_read = source.read

    def read(timeout: float):
        frame = original_read(timeout)
        images.append(frame.image)
        return frame

    source.read = read  # type: ignore[method-assign]
    capture = InlineCapture(source).start()
    assert capture.stats().state == "starting" and source.opens == 0  # opened by get()
    for i in range(5):
        slot = capture.get(1.0)
        assert slot is not None and slot.seq == i and slot.ts == pytest.approx(i / 30)
        assert slot.image is images[i]  # no copy
        capture.release(slot)
    for _ in range(2):
        with pytest.raises(SourceEnded):
            capture.get(1.0)
    st = capture.stats()
    assert (st.state, st.frames, st.drops, source.opens) == ("ended", 5, 0, 1)
    assert source.closes >= 1 and not capture.alive


def test_a_lost_source_is_reopened_after_the_backoff_delays() -> None:
    source = FileLike(fail_opens=2, frames=6, lose_after=3)
    capture = InlineCapture(source, backoff=lambda: iter([0.02, 0.04, 0.08]))
    started = time.monotonic()
    assert drain(capture) == [0, 1, 2, 3, 4, 5]
    opens = source.open_times
    assert len(opens) == 4  # 2 failures, the first open, the reopen after the loss
    assert opens[1] - opens[0] >= 0.02 and opens[2] - opens[1] >= 0.04
    st = capture.stats()
    assert st.open_failures == 2 and st.reconnects == 2 and st.state == "ended"
    assert time.monotonic() - started < 3


def test_an_open_error_surfaces_on_get_and_stays() -> None:
    class Missing(FileLike):
        def open(self):
            raise InputError("source 'fake://0': no such file")

    capture = InlineCapture(Missing())
    for _ in range(2):
        with pytest.raises(InputError, match="no such file"):
            capture.get(0.1)
    st = capture.stats()
    assert st.state == "failed" and "no such file" in st.error


def test_a_read_timeout_returns_none_and_is_counted() -> None:
    capture = InlineCapture(FileLike(frames=1, end=False))
    assert capture.get(0.01).seq == 0
    assert capture.get(0.01) is None and capture.stats().timeouts == 1
    assert capture.stop() and capture.stats().state == "stopped"


def test_finite_unpaced_sources_are_read_inline_cameras_and_paced_ones_threaded() -> None:
    assert reads_inline(make_source("frames:///nonexistent"))  # not opened here
    assert reads_inline(make_source("file:///clip.mp4?fps=25"))
    assert not reads_inline(make_source("frames:///nonexistent?realtime=1"))
    assert not reads_inline(make_source("v4l2:///dev/video0"))
    assert not reads_inline(FakeSource())
    assert reads_inline(FileLike())
