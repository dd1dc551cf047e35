import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_mer.errors import DataError, InputError  # noqa: E402
from edge_mer.pipeline.preprocess import FramePreprocessor  # noqa: E402


def _bgr(h, w, bgr):
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = bgr
    return frame


def test_core_import_pulls_neither_torch_nor_cv2():
    code = (
        "import sys, edge_mer.pipeline.preprocess; "
        "assert 'torch' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pure_blue_bgr_frame_becomes_rgb_blue():
    pre = FramePreprocessor(16, 16, 3)
    out = pre(_bgr(48, 64, (255, 0, 0)))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out == np.array([0, 0, 255], np.uint8)).all()


def test_writes_into_out_buffer_view():
    pre = FramePreprocessor(8, 10, 3)
    batch = np.zeros((2, 8, 10, 3), np.uint8)  # e.g. a runner's bound input
    frame = _bgr(30, 40, (10, 20, 30))
    result = pre(frame, out=batch[1])
    assert result is batch[1] or np.shares_memory(result, batch[1])
    assert (batch[1] == np.array([30, 20, 10], np.uint8)).all()
    assert (batch[0] == 0).all()
    # Repeated calls reuse the same buffers.
    again = pre(_bgr(30, 40, (1, 2, 3)), out=batch[1])
    assert np.shares_memory(again, batch) and (batch[1] == [3, 2, 1]).all()


def test_gray_out_buffer_and_gray_conversion():
    pre = FramePreprocessor(4, 4, 1)
    out = np.empty((4, 4, 1), np.uint8)
    result = pre(_bgr(8, 8, (255, 0, 0)), out=out)
    assert result is out
    expected = round(0.114 * 255)  # BT.601 weight of blue
    assert abs(int(out[0, 0, 0]) - expected) <= 1
    # Gray input, 2-D and [H,W,1], stays gray.
    gray = np.full((8, 8), 77, np.uint8)
    assert (pre(gray) == 77).all()
    assert (pre(gray[:, :, None]) == 77).all()


def test_gray_to_rgb_replicates():
    pre = FramePreprocessor(5, 5, 3)
    out = pre(np.full((10, 10), 200, np.uint8))
    assert out.shape == (5, 5, 3) and (out == 200).all()


def test_crop_box_selects_region_and_clips_to_frame():
    frame = _bgr(100, 100, (0, 0, 0))
    frame[20:40, 60:90] = (0, 255, 0)  # green patch at x 60..90, y 20..40
    pre = FramePreprocessor(10, 10, 3)
    out = pre(frame, box=(60, 20, 30, 20))
    assert (out == [0, 255, 0]).all()
    # A box running off the frame is clipped, not an error.
    edge = pre(frame, box=(90, 90, 50, 50))
    assert edge.shape == (10, 10, 3) and (edge == 0).all()


def test_enlarging_and_shrinking_both_work():
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    up = FramePreprocessor(32, 32, 1)(frame)
    down = FramePreprocessor(2, 2, 1)(np.kron(frame, np.ones((8, 8), np.uint8)))
    assert up.shape == (32, 32, 1) and down.shape == (2, 2, 1)
    # INTER_AREA on an exact 2x2 block average.
    assert down[0, 0, 0] == frame[:2, :2].mean()


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint16),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((8, 8, 3, 1), np.uint8),
        np.zeros((8,), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        [[0, 0]],
    ],
)
def test_bad_frames_raise_data_error(frame):
    with pytest.raises(DataError):
        FramePreprocessor(4, 4, 3)(frame)


@pytest.mark.parametrize("box", [(200, 200, 10, 10), (10, 10, 0, 5), (-20, 0, 10, 10)])
def test_empty_box_raises_data_error(box):
    with pytest.raises(DataError, match="crop box"):
        FramePreprocessor(4, 4, 3)(_bgr(50, 50, (1, 2, 3)), box=box)


def test_bad_out_buffer_and_config():
    pre = FramePreprocessor(4, 4, 3)
    with pytest.raises(InputError, match="output buffer"):
        pre(_bgr(8, 8, (1, 2, 3)), out=np.empty((4, 4, 1), np.uint8))
    with pytest.raises(InputError, match="output buffer"):
        pre(_bgr(8, 8, (1, 2, 3)), out=np.empty((4, 8, 3), np.uint8)[:, ::2])
    with pytest.raises(InputError, match="channels"):
        FramePreprocessor(4, 4, 2)
    with pytest.raises(InputError):
        FramePreprocessor(0, 4, 3)


def test_repeated_frames_reuse_their_plan_and_give_the_same_pixels():
    rng = np.random.default_rng(0)
    pre, fresh = FramePreprocessor(24, 24, 1), FramePreprocessor
    frames = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [(10, 5, 40, 40), (30, 10, 45, 50), None, [10, 5, 40, 40]]  # a list: no plan kept
    out = np.empty((24, 24, 1), np.uint8)
    for _ in range(3):
        for frame in frames:
            for box in boxes:
                pre(frame, box, out=out)
                assert (out == fresh(24, 24, 1)(frame, box)).all()
    assert len(pre._plans) == 3
    # A buffer that is not the one already checked is checked, whatever came before.
    with pytest.raises(InputError, match="does not fit"):
        pre(frames[0], boxes[0], out=np.empty((24, 24, 3), np.uint8))
    # A frame of another size or dtype is checked again, not served from a plan.
    with pytest.raises(DataError, match="dtype"):
        pre(frames[0].astype(np.float32), boxes[0])
    with pytest.raises(DataError, match="empty inside"):
        pre(frames[0][:4, :4], boxes[1])


def test_same_box_and_buffer_as_the_last_call_still_follow_the_frame():
    # The last call's (frame shape, box, out) is remembered: a loop's steady state. A frame
    # of another shape, channel count or dtype behind the same box and buffer is not served
    # from it.
    rng = np.random.default_rng(1)
    pre = FramePreprocessor(16, 16, 1)
    box, out = (4, 2, 30, 30), np.empty((16, 16, 1), np.uint8)
    shapes = [(40, 50, 3), (40, 50, 3), (40, 50), (40, 50, 4), (36, 36, 3), (40, 50, 1)]
    for i in range(40):
        frame = rng.integers(0, 256, shapes[int(rng.integers(len(shapes)))], dtype=np.uint8)
        assert pre(frame, box, out=out) is out
        assert (out == FramePreprocessor(16, 16, 1)(frame, box)).all(), i
    pre(np.zeros((40, 50, 3), np.uint8), box, out=out)
    with pytest.raises(DataError, match="empty inside"):
        pre(np.zeros((3, 3, 3), np.uint8), box, out=out)
    with pytest.raises(DataError, match="dtype"):
        pre(np.zeros((40, 50, 3), np.float32), box, out=out)


@pytest.mark.parametrize("src_ch", [3, 4])
@pytest.mark.parametrize("box", [None, (13, 7, 61, 45), (0, 0, 17, 9), (50, 30, 200, 200)])
def test_to_gray_converts_the_crop_then_resizes_it(src_ch, box):
    # The pixels are defined as OpenCV's: gray of the crop, then the gray crop resized
    # (INTER_AREA when shrinking, INTER_LINEAR when enlarging), whatever the cache holds.
    rng = np.random.default_rng(src_ch)
    frame = rng.integers(0, 256, (72, 96, src_ch), dtype=np.uint8)
    code = cv2.COLOR_BGR2GRAY if src_ch == 3 else cv2.COLOR_BGRA2GRAY
    x, y, w, h = box if box is not None else (0, 0, 96, 72)
    crop = frame[y : min(y + h, 72), x : min(x + w, 96)]
    pre = FramePreprocessor(24, 32, 1)
    out = np.empty((24, 32, 1), np.uint8)
    for _ in range(2):  # the plan and its scratch are made, then reused
        pre(frame, box, out=out)
        gray = cv2.cvtColor(crop, code)
        shrink = gray.shape[0] >= 24 and gray.shape[1] >= 32
        inter = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        assert (out[:, :, 0] == cv2.resize(gray, (32, 24), interpolation=inter)).all()


def test_to_rgb_resizes_then_swaps_and_that_commutes():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = (11, 5, 77, 70)
    crop = frame[5:75, 11:88]
    out = FramePreprocessor(32, 32, 3)(frame, box)
    small = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)
    assert (out == cv2.cvtColor(small, cv2.COLOR_BGR2RGB)).all()
    big = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    assert (out == cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)).all()


def test_scratch_buffers_stay_bounded_with_many_box_sizes():
    pre = FramePreprocessor(8, 8, 1)
    frame = np.zeros((200, 200, 3), np.uint8)
    for size in range(20, 120):
        pre(frame, (0, 0, size, size))
    assert len(pre._scratch) <= 16 and len(pre._plans) <= 16
