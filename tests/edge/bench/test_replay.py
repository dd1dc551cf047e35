"""Frame formats of the synthetic sources: BGR as rendered, or gray as a camera configured
for a gray model delivers it (``picam://`` the Y plane, ``csi://`` GRAY8)."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_mer.bench.replay import model_format, pregenerated, replay_uri  # noqa: E402
from edge_mer.errors import InputError  # noqa: E402
from edge_mer.pipeline.sources import SourceEnded, open_source  # noqa: E402


def _frames(uri: str, n: int) -> list[np.ndarray]:
    out = []
    with open_source(uri) as src:
        for _ in range(n):
            out.append(np.array(src.read(1.0).image))
    return out


def _gray(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("scheme", ["synthetic", "replay"])
def test_gray_frames_are_the_bgr_frames_converted(scheme: str) -> None:
    if scheme == "synthetic":
        uri = "synthetic://?seconds=0.2&fps=50&seed=4&size=96x64"
        bgr, gray = _frames(uri, 10), _frames(uri + "&format=gray", 10)
    else:
        bgr = _frames(replay_uri(50.0, 10, seed=4, size=(64, 96)), 10)
        gray = _frames(replay_uri(50.0, 10, seed=4, size=(64, 96), fmt="gray"), 10)
    assert bgr[0].shape == (64, 96, 3) and gray[0].shape == (64, 96)
    assert all(g.dtype == np.uint8 and g.flags.c_contiguous for g in gray)
    for b, g in zip(bgr, gray, strict=True):
        np.testing.assert_array_equal(g, _gray(b))
    assert not np.array_equal(gray[0], gray[-1])  # a stream, not one frame


def test_replayed_gray_frames_keep_their_timestamps_and_end() -> None:
    uri = replay_uri(50.0, 3, fmt="gray")  # 3 frames plus 2 s of slack
    with open_source(uri) as src:
        stamps = []
        with pytest.raises(SourceEnded):
            while True:
                stamps.append(src.read(1.0).ts)
    assert len(stamps) == 103 and stamps[:3] == [0.0, 0.02, 0.04]


def test_pregenerated_gray_is_kept_once() -> None:
    a = pregenerated(50.0, (32, 32), 9, 0.5, "gray")
    assert a is pregenerated(50.0, (32, 32), 9, 0.5, "gray")
    assert a.shape == (25, 32, 32)
    with pytest.raises(ValueError, match="frame format 'rgb'"):
        pregenerated(50.0, (32, 32), 9, 0.5, "rgb")


def test_bad_format_options_are_one_clear_error() -> None:
    for uri in ("synthetic://?format=rgb", replay_uri(50.0, 2).replace("bgr", "yuv")):
        with pytest.raises(InputError, match=r"format.*one of bgr, gray"):
            open_source(uri)


def test_model_format_follows_the_input_channels() -> None:
    class B:
        def __init__(self, channels: int) -> None:
            self.input = {"channels": channels}

    assert model_format(B(1)) == "gray" and model_format(B(3)) == "bgr"
