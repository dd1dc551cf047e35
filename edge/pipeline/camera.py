"""Live cameras: V4L2 and GStreamer through OpenCV, Jetson CSI (nvarguscamerasrc), and
the Raspberry Pi camera through picamera2.

Deadlines: OpenCV's ``VideoCapture.read()`` has no per-call timeout and can block forever
when a device vanishes (opencv#4468, #24393), so these sources are read on the capture
thread (:class:`edge_mer.pipeline.ring.CaptureThread`) and the consumer waits on the ring with a
timeout; ``read(timeout)`` cannot interrupt OpenCV (a V4L2 read gives up after the
backend's own select timeout, ~10 s, and then raises SourceLost here). picamera2 has real
deadlines: ``capture_request(wait=False)`` + ``wait(job, timeout)``.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import logging
import re
import time
from typing import Any

import numpy as np

from edge_mer.errors import InputError, MissingDependencyError
from edge_mer.pipeline.sources import (
    Frame,
    SourceBase,
    SourceEnded,
    SourceLost,
    SourceSpec,
    device_exists,
)

__all__ = [
    "CsiSource",
    "GstSource",
    "PicamSource",
    "V4l2Source",
    "csi_pipeline",
    "gstreamer_support",
    "require_gstreamer",
]

log = logging.getLogger(__name__)

GST_FIX = (
    "on a Jetson use JetPack's OpenCV (apt python3-opencv) in a venv made with "
    "--system-site-packages, not pip's opencv-python (uninstall it: it shadows the apt one)"
)
# A pipeline whose source stops by itself ends (SourceEnded) instead of being "lost".
_FINITE_GST = re.compile(r"\b(filesrc|multifilesrc|num-buffers\s*=\s*[1-9])")


def _cv2(purpose: str) -> Any:
    from edge_mer.pipeline.preprocess import import_cv2

    return import_cv2(purpose)


def gstreamer_support(cv2: Any) -> bool:
    """True if this OpenCV build has its GStreamer backend ("GStreamer: YES")."""
    info = cv2.getBuildInformation()
    return re.search(r"^\s*GStreamer:\s*YES", info, re.MULTILINE) is not None


def require_gstreamer(cv2: Any, uri: str) -> None:
    """Raise a one-line :class:`InputError` with the fix if cv2 lacks GStreamer."""
    if not gstreamer_support(cv2):
        raise InputError(
            f"source {uri!r}: cv2 {cv2.__version__} at {getattr(cv2, '__file__', '?')} has no "
            f"GStreamer support: {GST_FIX}"
        )


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 60.0,
    flip: int = 0,
    fmt: str = "gray",
) -> str:
    """The Jetson CSI pipeline for OpenCV: nvarguscamerasrc -> NV12 in NVMM -> nvvidconv ->
    GRAY8 (``fmt="gray"``: [H, W] frames, one CPU copy) or BGR (``fmt="bgr"``: through
    BGRx + videoconvert, [H, W, 3]) -> appsink that keeps only the newest buffer."""
    if fmt not in ("gray", "bgr"):
        raise InputError(f"csi format {fmt!r}: use gray or bgr")
    num, den = _fraction(fps)
    head = (
        f"nvarguscamerasrc sensor-id={int(sensor_id)} ! "
        f"video/x-raw(memory:NVMM),width={int(width)},height={int(height)},"
        f"format=NV12,framerate={num}/{den} ! nvvidconv flip-method={int(flip)} ! "
    )
    if fmt == "gray":
        tail = "video/x-raw,format=GRAY8 ! "
    else:
        tail = "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
    return head + tail + "appsink drop=true max-buffers=1 sync=false"


def _fraction(fps: float) -> tuple[int, int]:
    """60 -> (60, 1); 29.97 -> (2997, 100): GStreamer caps want a fraction."""
    if float(fps).is_integer():
        return int(fps), 1
    return round(fps * 100), 100


class OpenCvSource(SourceBase):
    """A live camera through ``cv2.VideoCapture(target, api)``; ``ts = time.monotonic()``
    when a frame arrives. A failed open or read raises :class:`SourceLost` (the capture
    thread reopens with backoff); ``finite`` pipelines raise SourceEnded instead."""

    live = True
    api_name = "CAP_ANY"

    def __init__(self, spec: SourceSpec, target: str, finite: bool = False) -> None:
        super().__init__(spec)
        self.target = target
        self.live = not finite
        self._cap: Any = None
        self._buf: np.ndarray | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._fps_request: float | None = None

    def _check(self, cv2: Any) -> None:
        """Raise before opening if this device/backend cannot work here."""

    def _open(self) -> None:
        cv2 = _cv2(f"{self.spec.scheme}:// sources")
        self._check(cv2)
        cap = cv2.VideoCapture(self.target, getattr(cv2, self.api_name))
        if not cap.isOpened():
            cap.release()
            self._open_failed()
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self._width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self._height),
            (cv2.CAP_PROP_FPS, self._fps_request),
        ):
            if value is not None:
                cap.set(prop, value)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and fps > 0 else self._fps_request
        self._cap = cap

    def _open_failed(self) -> None:
        if not self.live:
            raise InputError(
                f"source {self.uri!r}: OpenCV cannot start {self.target!r} "
                "(check it with gst-launch-1.0)"
            )
        raise SourceLost(f"{self}: cannot open {self.target!r}")

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise SourceLost(f"{self} is not open")
        ok, image = self._cap.read(self._buf)
        ts = time.monotonic()
        if not ok or image is None:
            self.close()
            if not self.live:
                raise SourceEnded(f"{self}: end of stream")
            raise SourceLost(f"{self}: no frame from {self.target!r} (device gone?)")
        self._buf = image
        return Frame(self._next_seq(), ts, image)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class V4l2Source(OpenCvSource):
    """``v4l2:///dev/video0`` (or ``v4l2://0``). Options ``width``, ``height``, ``fps``.
    A device node that does not exist raises :class:`SourceLost`, so a daemon waits for it."""

    api_name = "CAP_V4L2"
    OPTIONS = ("width", "height", "fps")

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> V4l2Source:
        spec.check_options(cls.OPTIONS)
        target = spec.target
        if target.isdigit():
            target = f"/dev/video{target}"
        if not target.startswith("/"):
            raise InputError(
                f"source {spec.uri!r}: v4l2:// needs a device path, e.g. v4l2:///dev/video0"
            )
        source = cls(spec, target)
        source._width = spec.get_int("width", None, 1)
        source._height = spec.get_int("height", None, 1)
        source._fps_request = spec.get_float("fps", None)
        return source

    def _check(self, cv2: Any) -> None:
        if not device_exists(self.target):
            raise SourceLost(f"{self}: camera {self.target} does not exist (yet)")

    def read(self, timeout: float) -> Frame | None:
        if self._cap is not None and not device_exists(self.target):
            self.close()
            raise SourceLost(f"{self}: camera {self.target} vanished")
        return super().read(timeout)


class GstSource(OpenCvSource):
    """``gst://<pipeline ending in appsink>`` through OpenCV's GStreamer backend. Needs a
    cv2 built with GStreamer (checked first). A pipeline with ``filesrc`` or
    ``num-buffers=N`` is finite (SourceEnded at its end); any other is live."""

    api_name = "CAP_GSTREAMER"

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> GstSource:
        if "appsink" not in spec.target:
            raise InputError(f"source {spec.uri!r}: a gst:// pipeline must end in '! appsink'")
        return cls(spec, spec.target, finite=_FINITE_GST.search(spec.target) is not None)

    def _check(self, cv2: Any) -> None:
        require_gstreamer(cv2, self.uri)


class CsiSource(GstSource):
    """``csi://N?width=1280&height=720&fps=60&flip=0&format=gray|bgr``: a Jetson CSI camera
    through :func:`csi_pipeline` (nvarguscamerasrc). Live."""

    OPTIONS = ("width", "height", "fps", "flip", "format")

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> CsiSource:  # type: ignore[override]
        spec.check_options(cls.OPTIONS)
        if not spec.target.isdigit():
            raise InputError(f"source {spec.uri!r}: csi:// needs a sensor id, e.g. csi://0")
        fps = spec.get_float("fps", 60.0)
        pipeline = csi_pipeline(
            int(spec.target),
            spec.get_int("width", 1280, 1),  # type: ignore[arg-type]
            spec.get_int("height", 720, 1),  # type: ignore[arg-type]
            fps,  # type: ignore[arg-type]
            spec.get_int("flip", 0),  # type: ignore[arg-type]
            spec.get_choice("format", "gray", ("gray", "bgr")),
        )
        source = cls(spec, pipeline)
        source._fps = fps
        return source


def require_picamera2_deadlines(module: Any) -> None:
    """picamera2 0.3.17 added ``wait(job, timeout)`` (and 0.3.14 ``MappedArray(write=)``);
    before it a frame read cannot have a deadline: refuse with one line (exit 2)."""
    try:
        params = inspect.signature(module.Picamera2.wait).parameters
    except (AttributeError, TypeError, ValueError):
        params = {}
    if "timeout" not in params:
        version = getattr(module, "__version__", None) or "older than 0.3.17"
        raise InputError(
            f"picamera2 {version} cannot wait for a frame with a timeout, which picam:// "
            "needs: update it to 0.3.17 or newer (sudo apt update && sudo apt install "
            "python3-picamera2)"
        )


class PicamSource(SourceBase):
    """``picam://N?width=640&height=480&fps=90&main=WxH&buffers=6``: a Raspberry Pi camera
    through picamera2. The lores stream is YUV420 at ``width x height``; its Y plane is the
    grayscale frame, copied once from a ``MappedArray`` view into a buffer owned by this
    source (so ``Frame.image`` is [H, W] and valid until the next read). ``ts`` is the
    request's ``SensorTimestamp`` (ns -> s); ``FrameDurationLimits`` pins the fps.

    ``picamera2`` is imported on ``open()``; tests pass ``picamera2=`` a fake module with
    ``Picamera2`` and ``MappedArray``.

    Checked against picamera2 0.3.38's source, and back to 0.3.12 (docs/cameras.md); needs
    0.3.17+ (:func:`require_picamera2_deadlines`). ``Picamera2(camera_num)`` raises
    RuntimeError for a missing camera (IndexError before 0.3.37);
    ``create_video_configuration(main=, lores=, buffer_count=, controls=)`` with lores
    defaulting to YUV420; ``camera_configuration()["lores"]["size"]`` is the size libcamera
    granted; ``capture_request(wait=False)`` returns a Job; ``wait(job, timeout)`` is
    ``Future.result(timeout)``, so a timeout raises ``concurrent.futures.TimeoutError`` and
    leaves the job pending; ``MappedArray(request, "lores", write=False)`` maps a YUV420
    stream as ``[h * 3 // 2, stride]`` uint8, Y plane first; ``get_metadata()`` keys are
    libcamera control names (``SensorTimestamp``, ns); ``request.release()``.
    """

    live = True
    OPTIONS = ("width", "height", "fps", "main", "buffers")

    def __init__(self, spec: SourceSpec, picamera2: Any = None) -> None:
        super().__init__(spec)
        spec.check_options(self.OPTIONS)
        if not spec.target.isdigit():
            raise InputError(f"source {spec.uri!r}: picam:// needs a camera index, e.g. picam://0")
        self.index = int(spec.target)
        self.size = (spec.get_int("width", 640, 2), spec.get_int("height", 480, 2))
        self.main_size = spec.get_size("main", None) or self.size
        if self.main_size[0] < self.size[0] or self.main_size[1] < self.size[1]:  # type: ignore[operator]
            raise InputError(
                f"source {spec.uri!r}: lores {self.size[0]}x{self.size[1]} must not be larger "
                f"than main {self.main_size[0]}x{self.main_size[1]}"
            )
        self._fps = spec.get_float("fps", 30.0)
        self.buffers = spec.get_int("buffers", 6, 2)
        self._module = picamera2
        self._cam: Any = None
        self._job: Any = None  # a capture_request job still pending after a timeout
        self._buf: np.ndarray | None = None

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> PicamSource:
        return cls(spec)

    def configuration(self, cam: Any) -> Any:
        """The video configuration: main + lores YUV420, fixed frame duration."""
        frame_us = round(1e6 / self._fps)  # type: ignore[operator]
        return cam.create_video_configuration(
            main={"size": tuple(self.main_size)},
            lores={"size": tuple(self.size), "format": "YUV420"},
            buffer_count=self.buffers,
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )

    def _open(self) -> None:
        module = self._module
        if module is None:
            try:
                module = importlib.import_module("picamera2")
            except ImportError:
                raise MissingDependencyError(
                    "picamera2",
                    "pi",
                    "picam:// sources (apt install python3-picamera2; "
                    "venv with --system-site-packages)",
                ) from None
            self._module = module
        require_picamera2_deadlines(module)
        try:
            cam = module.Picamera2(self.index)
        except (IndexError, RuntimeError) as exc:
            raise SourceLost(f"{self}: camera {self.index} not available ({exc})") from None
        try:
            cam.configure(self.configuration(cam))
            # Widths get aligned, so the granted lores size can differ from the asked one.
            w, h = cam.camera_configuration()["lores"]["size"]
            self._buf = np.empty((h, w), np.uint8)
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceLost(f"{self}: camera {self.index} failed to start ({exc})") from None
        self._cam, self._job = cam, None

    def read(self, timeout: float) -> Frame | None:
        if self._cam is None:
            raise SourceLost(f"{self} is not open")
        if self._job is None:
            self._job = self._cam.capture_request(wait=False)
        try:
            request = self._cam.wait(self._job, timeout=timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):  # distinct types on 3.10
            return None  # the job stays pending; the next read waits on it again
        except Exception as exc:
            self._job = None
            self.close()
            raise SourceLost(f"{self}: capture failed ({exc})") from None
        self._job = None
        try:
            ts_ns = request.get_metadata().get("SensorTimestamp")
            h, w = self._buf.shape  # type: ignore[union-attr]
            # write=False: a read-only DMA-buf sync (the default syncs for writing too).
            with self._module.MappedArray(request, "lores", write=False) as mapped:
                # YUV420 lores: rows [0, h) are the Y plane; a row may be padded past w.
                np.copyto(self._buf, mapped.array[:h, :w])
        finally:
            request.release()
        ts = ts_ns * 1e-9 if ts_ns is not None else time.monotonic()
        return Frame(self._next_seq(), ts, self._buf)  # type: ignore[arg-type]

    def _close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        job, self._job = self._job, None
        try:
            if job is not None:  # a request that arrives after its timeout still holds a buffer
                try:
                    cam.wait(job, timeout=0.5).release()
                except Exception:
                    log.debug("%s: pending request not collected at close", self)
            cam.stop()
        finally:
            cam.close()
