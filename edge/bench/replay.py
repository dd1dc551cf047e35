"""The synthetic stream pre-generated once and replayed from memory (``synthetic-replay://``),
so that the generator's cost (about 2 ms a 128x128 frame) is not in the capture stage of
``edge-mer bench``. Frames come from ``edge_mer.calibration.synth``, imported lazily.

The frames are BGR as rendered, or (``format=gray``) their OpenCV BGR->gray conversion,
done once: what a camera configured for a gray model delivers (``picam://`` the Y plane,
``csi://`` GRAY8). A gray model's preprocessor converts BGR frames with the same call, on
the whole frame first, so both formats give it the same pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_mer.pipeline.sources import Frame, SourceBase, SourceEnded, SourceSpec, register_scheme

REPLAY_SCHEME = "synthetic-replay"
LOOP_S = 10.0  # at most this many seconds of distinct frames are generated, then replayed

_FRAMES: dict[tuple[Any, ...], np.ndarray] = {}


#: Frame formats of the replay: BGR as rendered, or gray (one channel, ``[N, H, W]``).
FORMATS = ("bgr", "gray")


def pregenerated(
    fps: float, size: tuple[int, int], seed: int, seconds: float = LOOP_S, fmt: str = "bgr"
) -> np.ndarray:
    """``min(seconds, LOOP_S)`` of the synthetic stream as one uint8 array, ``[N, H, W, 3]``
    BGR or (``fmt="gray"``) ``[N, H, W]`` gray, generated once per process and argument set."""
    if fmt not in FORMATS:
        raise ValueError(f"frame format {fmt!r} is not one of {FORMATS}")
    seconds = min(float(seconds), LOOP_S)
    key = (fps, size, seed, seconds, fmt)
    if key not in _FRAMES:
        if fmt == "gray":
            from edge_mer.pipeline.preprocess import import_cv2

            cv2 = import_cv2("gray frames")
            bgr = pregenerated(fps, size, seed, seconds)
            gray = np.empty(bgr.shape[:3], np.uint8)
            for frame, out in zip(bgr, gray, strict=True):
                cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY, out)
            _FRAMES[key] = gray
        else:
            from edge_mer.calibration.synth import generate_stream

            frames, _ = generate_stream(seconds=seconds, fps=fps, size=size, seed=seed, lazy=False)
            _FRAMES[key] = np.ascontiguousarray(frames)
    return _FRAMES[key]


class ReplaySynthetic(SourceBase):
    """Pre-generated synthetic frames replayed in a loop (``ts = seq / fps``): reading a
    frame costs no generation. Options: ``seconds`` (stream length, default 10), ``fps``
    (default 50), ``size`` (WxH, default 128x128), ``seed``, ``loop`` (seconds of distinct
    frames, at most 10), ``format`` (``bgr``, the default, or ``gray``)."""

    OPTIONS = ("seconds", "fps", "size", "seed", "loop", "format")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        spec.check_options(self.OPTIONS)
        self._fps = float(spec.get_float("fps", 50.0))  # type: ignore[arg-type]
        w, h = spec.get_size("size", (128, 128))  # type: ignore[misc]
        seconds = float(spec.get_float("seconds", 10.0))  # type: ignore[arg-type]
        loop = float(spec.get_float("loop", min(seconds, LOOP_S)))  # type: ignore[arg-type]
        fmt = spec.get_choice("format", "bgr", FORMATS)
        self.frames = pregenerated(self._fps, (h, w), spec.get_int("seed", 0) or 0, loop, fmt)
        self.frame_count = round(seconds * self._fps)
        self._index = 0
        self._views = list(self.frames)  # one view per frame, made once: a read only indexes

    def _open(self) -> None:
        pass

    def read(self, timeout: float) -> Frame | None:
        i = self._index
        if i >= self.frame_count:
            raise SourceEnded(f"{self}: end of the replayed stream ({i} frames)")
        self._index = i + 1
        views = self._views
        return Frame(self._next_seq(), i / self._fps, views[i % len(views)])


def replay_uri(
    fps: float,
    frames: int,
    seed: int = 7,
    size: tuple[int, int] = (128, 128),
    fmt: str = "bgr",
) -> str:
    """A ``synthetic-replay://`` URI long enough for ``frames`` frames (plus slack) in frame
    format ``fmt`` (:data:`FORMATS`); registers the scheme."""
    if fmt not in FORMATS:
        raise ValueError(f"frame format {fmt!r} is not one of {FORMATS}")
    register_scheme(REPLAY_SCHEME, ReplaySynthetic)
    seconds = frames / fps + 2.0
    return (
        f"{REPLAY_SCHEME}://?seconds={seconds:g}&fps={fps:g}&seed={seed}"
        f"&size={size[1]}x{size[0]}&format={fmt}"
    )


def model_format(bundle: Any) -> str:
    """The frame format a camera gives ``bundle``'s model: gray for a one-channel input
    (``picam://`` and ``csi://`` deliver gray by default), else BGR."""
    return "gray" if int(bundle.input["channels"]) == 1 else "bgr"
