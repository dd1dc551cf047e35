"""Frame preprocessing: one camera or video frame -> one model input frame.

The same :class:`FramePreprocessor` feeds the INT8 calibration readers on the host and the
encoder on the device, so calibration sees exactly the pixels the deployed model sees.
OpenCV is an optional extra of the core; it is imported when a preprocessor is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsInt

import numpy as np

from edge_mer.errors import DataError, InputError, MissingDependencyError

__all__ = ["FramePreprocessor", "import_cv2"]

# Source channel count -> (OpenCV colour code to reach gray, to reach RGB); None = no conversion.
_CONVERSIONS = {
    1: ("", "GRAY2RGB"),
    3: ("BGR2GRAY", "BGR2RGB"),
    4: ("BGRA2GRAY", "BGRA2RGB"),
}
_UINT8 = np.dtype(np.uint8)
#: (frame shape, box) combinations whose crop plan is kept (a few faces, a few relocks).
PLANS = 16
#: Caller buffers remembered as checked (one per face: the live pipeline's encoder rows).
OUTS = 4


def import_cv2(purpose: str) -> Any:
    """Import OpenCV, or raise :class:`MissingDependencyError` naming ``purpose``."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("opencv-python-headless", "cpu", purpose) from None
    return cv2


class FramePreprocessor:
    """Turns a camera/video frame into the model input: crop -> resize -> channel conversion.

    ``__call__`` takes a uint8 frame ``[H, W]`` or ``[H, W, 1]`` (gray), ``[H, W, 3]`` (BGR,
    OpenCV order) or ``[H, W, 4]`` (BGRA) and returns uint8 ``[height, width, channels]``, RGB
    order when ``channels == 3``. Shrinking uses ``INTER_AREA``, enlarging ``INTER_LINEAR``.

    The order of the two OpenCV calls follows the pixels they must touch. To gray, the
    crop is converted first and the gray crop resized: a three-channel resize costs 2-3.5
    times a one-channel one, more than the conversion of the extra pixels (64x64 gray out
    of a 240x240 BGR crop: 64 against 127 µs; out of a whole 128x128 frame: 3.6 against
    4.7 µs; ``benchmarks/README.md``). To RGB, the crop is resized first and the smaller
    image converted (a channel swap commutes with the resize). Either way the intermediate
    goes through a scratch buffer owned by this object, so one instance must not be called
    from two threads at once.

    Per frame only the crop view and the OpenCV calls remain: the checks, the clipped crop,
    the interpolation and the conversion are worked out once per (frame shape, box) -- a
    face's crop stays locked for a window -- and kept for the last :data:`PLANS` of them.
    """

    def __init__(self, height: SupportsInt, width: SupportsInt, channels: SupportsInt) -> None:
        if int(height) <= 0 or int(width) <= 0:
            raise InputError(
                f"model input size {height!r}x{width!r} is not positive: "
                "height and width must be at least 1"
            )
        if channels not in (1, 3):
            raise InputError(
                f"model input channels {channels!r} not supported: use 1 (gray) or 3 (RGB)"
            )
        self.height = int(height)
        self.width = int(width)
        self.channels = int(channels)
        self._cv2 = import_cv2("frame preprocessing")
        # Shape -> intermediate image: a gray crop [h, w], or a resized crop [h, w(, C)].
        self._scratch: dict[tuple[int, ...], np.ndarray] = {}
        # (frame shape, box) -> (crop index or None, interpolation, colour code, scratch)
        self._plans: dict[tuple[Any, Any], tuple[Any, ...]] = {}
        self._outs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (out, its 2-D view)
        self._dsize = (self.width, self.height)
        self._last: tuple[Any, ...] = ((), (), (), ())  # see __call__; matches no call

    @property
    def shape(self) -> tuple[int, int, int]:
        """The output shape ``(height, width, channels)``."""
        return (self.height, self.width, self.channels)

    def __repr__(self) -> str:
        return (
            f"FramePreprocessor(height={self.height}, width={self.width}, channels={self.channels})"
        )

    def __call__(
        self,
        frame: np.ndarray,
        box: Sequence[int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Crop ``box = (x, y, w, h)`` (frame pixels, clipped to the frame), resize, convert.

        With ``out`` (C-contiguous uint8 ``[height, width, channels]``, e.g. a view into a
        runner's bound input buffer) the result is written into it and ``out`` is returned;
        the caller keeps owning it. Without ``out`` a new array is returned.
        """
        last = self._last  # the previous call's frame shape, box, out and what they need
        if (
            box is last[1]
            and out is last[2]
            and type(frame) is np.ndarray
            and frame.dtype is _UINT8
            and frame.shape == last[0]
        ):  # the same face and buffer as the last frame: a loop's steady state
            crop, interpolation, code, scratch, dst = last[3]
            src = frame if crop is None else frame[crop]
        else:
            plan = None
            cacheable = (
                type(frame) is np.ndarray
                and frame.dtype is _UINT8
                and (box is None or type(box) is tuple)
            )
            if cacheable:
                plan = self._plans.get((frame.shape, box))
            if plan is None:
                plan = self._plan(frame, box)
            crop, interpolation, code, scratch = plan
            src = frame if crop is None else frame[crop]
            if out is None:
                out = np.empty(self.shape, np.uint8)
                dst = out.reshape(self.height, self.width) if self.channels == 1 else out
            else:  # the same buffer as a recent call: already checked
                known = self._outs.get(id(out))
                dst = known[1] if known is not None and known[0] is out else self._target(out)
                if cacheable:
                    self._last = (frame.shape, box, out, (*plan, dst))
        cv2 = self._cv2
        # Positional arguments: OpenCV's bindings parse keywords noticeably slower.
        if code is None:  # gray -> gray: resize straight into the output
            cv2.resize(src, self._dsize, dst, 0, 0, interpolation)
        elif self.channels == 1:  # to gray: convert the crop, resize the gray crop
            cv2.cvtColor(src, code, scratch)
            cv2.resize(scratch, self._dsize, dst, 0, 0, interpolation)
        else:  # to RGB: resize, then convert the smaller image
            cv2.resize(src, self._dsize, scratch, 0, 0, interpolation)
            cv2.cvtColor(scratch, code, dst)
        return out

    def _target(self, out: Any) -> np.ndarray:
        """Check ``out`` and return the array OpenCV writes (2-D for gray). The last
        :data:`OUTS` caller-owned buffers are remembered (with a reference, so an id is
        never reused while it is kept): a loop that passes the same views every frame,
        as the live pipeline does, is checked once."""
        if not (
            type(out) is np.ndarray
            and out.dtype is _UINT8
            and out.shape == self.shape
            and out.flags.c_contiguous
        ):
            self._check_out(out)
        dst = out.reshape(self.height, self.width) if self.channels == 1 else out
        if len(self._outs) >= OUTS:
            self._outs.clear()
        self._outs[id(out)] = (out, dst)
        return dst

    def _plan(self, frame: Any, box: Sequence[int] | None) -> tuple[Any, ...]:
        """Check ``frame`` and ``box`` and work out everything a frame like it needs."""
        cv2 = self._cv2
        src = self._check_frame(frame)
        h, w = src.shape[:2]
        y0, y1, x0, x1 = (0, h, 0, w) if box is None else self._crop_bounds(src, box)
        src_ch = 1 if src.ndim == 2 else src.shape[2]
        shrinking = x1 - x0 >= self.width and y1 - y0 >= self.height
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        name = _CONVERSIONS[src_ch][0 if self.channels == 1 else 1]
        code = getattr(cv2, "COLOR_" + name) if name else None
        scratch = None
        if code is not None:  # the intermediate image: the gray crop, or the resized crop
            shape: tuple[int, ...] = (
                (y1 - y0, x1 - x0)
                if self.channels == 1
                else (self.height, self.width) + (() if src_ch == 1 else (src_ch,))
            )
            scratch = self._scratch.get(shape)
            if scratch is None:
                if len(self._scratch) >= PLANS:
                    self._scratch.clear()  # the plans keep the ones they use
                scratch = self._scratch[shape] = np.empty(shape, np.uint8)
        crop: tuple[Any, ...] | None = (slice(y0, y1), slice(x0, x1))
        if frame.ndim == 3 and frame.shape[2] == 1:
            crop = (*crop, 0)  # type: ignore[misc]
        elif (y0, y1, x0, x1) == (0, h, 0, w):
            crop = None  # the whole frame: no view to make
        plan = (crop, interpolation, code, scratch)
        if box is None or type(box) is tuple:
            if len(self._plans) >= PLANS:
                self._plans.clear()
            self._plans[(frame.shape, box)] = plan
        return plan

    def _check_frame(self, frame: Any) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise DataError(
                f"frame of type {type(frame).__name__!r} is not a numpy array: "
                "pass a uint8 [H,W] or [H,W,C] array"
            )
        if frame.dtype != np.uint8:
            raise DataError(
                f"frame dtype {str(frame.dtype)!r} is not uint8: convert 8-bit frames "
                "(e.g. frame.astype(np.uint8) after scaling) before preprocessing"
            )
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
            raise DataError(
                f"frame shape {tuple(frame.shape)!r} not supported: expected [H,W] or [H,W,1] "
                "gray, [H,W,3] BGR or [H,W,4] BGRA"
            )
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise DataError(
                f"frame shape {tuple(frame.shape)!r} is empty: the source gave no pixels"
            )
        return frame

    @staticmethod
    def _crop_bounds(frame: np.ndarray, box: Sequence[int]) -> tuple[int, ...]:
        """``(y0, y1, x0, x1)`` of ``box = (x, y, w, h)`` clipped to the frame."""
        try:
            x, y, w, h = (int(v) for v in box)
        except (TypeError, ValueError):
            raise DataError(f"crop box {box!r} is not (x, y, w, h) in pixels") from None
        frame_h, frame_w = frame.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, frame_w), min(y + h, frame_h)
        if x1 <= x0 or y1 <= y0:
            raise DataError(
                f"crop box {box!r} is empty inside the {frame_w}x{frame_h} frame: "
                "give (x, y, w, h) with w, h > 0 that overlaps the frame"
            )
        return y0, y1, x0, x1

    def _check_out(self, out: Any) -> None:
        if (
            not isinstance(out, np.ndarray)
            or out.dtype != np.uint8
            or out.shape != self.shape
            or not out.flags.c_contiguous
        ):
            desc = (
                f"{out.dtype!s} {tuple(out.shape)}"
                if isinstance(out, np.ndarray)
                else type(out).__name__
            )
            raise InputError(
                f"output buffer {desc!r} does not fit: pass a C-contiguous uint8 array "
                f"of shape {self.shape!r}"
            )
