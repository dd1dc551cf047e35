"""Face stage: detect every N frames, track, and keep each track's crop locked.

Crop jitter looks exactly like the tiny motions a micro-expression model looks for, so a
track's crop box stays fixed over an analysis window and moves only between windows or
when the face has clearly drifted away from it. Detectors: OpenCV's Haar cascade shipped
in cv2's data (default), YuNet given a model file, a fixed ROI, or none (frames are face
crops already).

The stage returns boxes only; the caller resizes each crop straight into the runner's
input buffer with :class:`edge_mer.pipeline.preprocess.FramePreprocessor` (``out=`` view).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_mer.errors import InputError

log = logging.getLogger(__name__)

DETECTORS = ("haar", "yunet", "roi", "none")


@dataclass(frozen=True)
class Box:
    """A face box in frame pixels (x, y: top-left)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    # (x, y, w, h), made once: a crop is looked up by this very tuple every frame.
    _xywh: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_xywh", (self.x, self.y, self.w, self.h))

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    def drift(self, other: Box) -> float:
        """Centre shift or size change, as a fraction of this box's size."""
        dx = abs((other.x + other.w / 2) - (self.x + self.w / 2)) / max(1, self.w)
        dy = abs((other.y + other.h / 2) - (self.y + self.h / 2)) / max(1, self.h)
        ds = abs(other.w - self.w) / max(1, self.w)
        return max(dx, dy, ds)

    def expanded(self, margin: float, frame_hw: tuple[int, int], square: bool = True) -> Box:
        """The box grown by ``margin`` of its size on each side (square if asked), clipped."""
        fh, fw = frame_hw
        side = max(self.w, self.h) if square else 0
        w, h = (side or self.w) * (1 + 2 * margin), (side or self.h) * (1 + 2 * margin)
        cx, cy = self.x + self.w / 2, self.y + self.h / 2
        x0, y0 = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
        x1, y1 = min(fw, round(cx + w / 2)), min(fh, round(cy + h / 2))
        return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0), self.score)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)``; the same tuple every call (a crop is looked up by it per frame)."""
        return self._xywh


class Detector(Protocol):
    """``detect(gray)``; a detector with ``needs_pixels = False`` reads only the frame's
    size, and is given the frame as it came (no grayscale conversion)."""

    def detect(self, gray: np.ndarray) -> list[Box]:
        """Faces in a uint8 grayscale frame ``[H, W]``, best first."""
        ...


def _cv2():
    from edge_mer.pipeline.preprocess import import_cv2

    return import_cv2("the face stage")


class HaarDetector:
    """OpenCV's frontal-face Haar cascade from ``cv2.data`` (OpenCV 4.x)."""

    def __init__(
        self,
        min_face: int = 48,
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        max_side: int = 480,
    ) -> None:
        cv2 = _cv2()
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise InputError(
                f"face detector 'haar' needs OpenCV 4.x with its data files; this cv2 "
                f"{cv2.__version__} has none (OpenCV 5 moved Haar out): install "
                "'opencv-python-headless<5', or set face.detector to 'yunet', 'roi' or 'none'"
            )
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise InputError(f"Haar cascade {str(path)!r} could not be loaded; reinstall OpenCV")
        self._cv2 = cv2
        self.min_face, self.scale_factor, self.min_neighbors = min_face, scale_factor, min_neighbors
        self.max_side = max_side

    def detect(self, gray: np.ndarray) -> list[Box]:
        scale = min(1.0, self.max_side / max(gray.shape))
        small = (
            gray
            if scale == 1.0
            else self._cv2.resize(
                gray, None, fx=scale, fy=scale, interpolation=self._cv2.INTER_AREA
            )
        )
        found = self._cascade.detectMultiScale(
            small,
            self.scale_factor,
            self.min_neighbors,
            minSize=(max(8, int(self.min_face * scale)),) * 2,
        )
        boxes = [Box(*(int(v / scale + 0.5) for v in b)) for b in found]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


class YuNetDetector:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``) with a model file the user provides."""

    def __init__(self, model: str | Path, score_threshold: float = 0.7) -> None:
        cv2 = _cv2()
        model = Path(model)
        if not model.is_file():
            raise InputError(
                f"face.yunet_model {str(model)!r} does not exist: download "
                "face_detection_yunet_*.onnx from the OpenCV model zoo onto "
                "the device and point the config at it"
            )
        if not hasattr(cv2, "FaceDetectorYN"):
            raise InputError(f"this cv2 {cv2.__version__} has no FaceDetectorYN (OpenCV >= 4.5.4)")
        self._det = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold)
        self._size: tuple[int, int] = (0, 0)
        self._cv2 = cv2

    def detect(self, gray: np.ndarray) -> list[Box]:
        h, w = gray.shape[:2]
        if (w, h) != self._size:
            self._det.setInputSize((w, h))
            self._size = (w, h)
        bgr = self._cv2.cvtColor(gray, self._cv2.COLOR_GRAY2BGR)
        _, faces = self._det.detect(bgr)
        if faces is None:
            return []
        return [Box(int(f[0]), int(f[1]), int(f[2]), int(f[3]), float(f[-1])) for f in faces]


class RoiDetector:
    """A fixed region of interest: the face is where the camera is pointed."""

    needs_pixels = False

    def __init__(self, roi: Sequence[int]) -> None:
        x, y, w, h = (int(v) for v in roi)
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise InputError(f"face.roi {list(roi)!r} must be [x, y, w, h] with w, h > 0")
        self.box = Box(x, y, w, h)

    def detect(self, gray: np.ndarray) -> list[Box]:
        return [self.box]


class FullFrame:
    """No detector: every frame is already a face crop."""

    needs_pixels = False

    def __init__(self) -> None:
        self._box = Box(0, 0, 0, 0)

    def detect(self, gray: np.ndarray) -> list[Box]:
        h, w = gray.shape[:2]
        if (self._box.w, self._box.h) != (w, h):
            self._box = Box(0, 0, w, h)
        return [self._box]


def make_detector(
    kind: str,
    *,
    roi: tuple[int, int, int, int] | None = None,
    yunet_model: str | Path | None = None,
    min_face: int = 48,
) -> Detector:
    """The detector named by ``face.detector``."""
    if kind == "haar":
        return HaarDetector(min_face=min_face)
    if kind == "yunet":
        if yunet_model is None:
            raise InputError("face.detector 'yunet' needs face.yunet_model (a .onnx file)")
        return YuNetDetector(yunet_model)
    if kind == "roi":
        if roi is None:
            raise InputError("face.detector 'roi' needs face.roi = [x, y, w, h]")
        return RoiDetector(roi)
    if kind == "none":
        return FullFrame()
    raise InputError(f"face.detector {kind!r}: choose one of {list(DETECTORS)}")


@dataclass
class Track:
    """One face over time. ``crop`` is the locked box the model sees."""

    id: int
    box: Box  # latest detection
    crop: Box  # locked crop
    locked_at: int  # frame index at which the crop was locked
    missed: int = 0


class FaceStage:
    """Detection every ``detect_every`` frames, IoU tracking, crops locked per window.

    Call :meth:`process` once per frame; it returns the live tracks (the same list object
    between detections, so the steady state allocates nothing). ``lost`` holds the ids of
    tracks that ended at the last call, for the state cache to reset.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        detect_every: int = 5,
        window: int = 16,
        margin: float = 0.1,
        relock_drift: float = 0.2,
        max_missed: int = 3,
        min_iou: float = 0.3,
        max_faces: int = 4,
    ) -> None:
        if detect_every < 1 or window < 1 or max_missed < 0 or max_faces < 1:
            raise InputError(
                "face.detect_every, window and max_faces must be >= 1, max_missed >= 0"
            )
        self.detector = detector
        self.detect_every, self.window, self.margin = detect_every, window, margin
        self.relock_drift, self.max_missed, self.min_iou = relock_drift, max_missed, min_iou
        self.max_faces = max_faces
        self.tracks: list[Track] = []
        self.lost: list[int] = []
        self.frame_index = -1
        self._next_id = 0
        self._gray: np.ndarray | None = None
        self._pixels = getattr(detector, "needs_pixels", True)
        self._shape: tuple[int, ...] | None = None  # see _unchanged
        self.detections = self.relocks = 0
        self.full_updates = 0  # detections that ran the full track update (not the shortcut)

    def _to_gray(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return image
        if image.shape[2] == 1:
            return image[:, :, 0]
        cv2 = _cv2()
        if self._gray is None or self._gray.shape != image.shape[:2]:
            self._gray = np.empty(image.shape[:2], np.uint8)
        cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=self._gray)
        return self._gray

    def process(self, image: np.ndarray) -> list[Track]:
        """Tracks with their locked crop boxes for this frame (uint8 gray or BGR image)."""
        i = self.frame_index = self.frame_index + 1
        if self.lost:
            self.lost.clear()
        if i % self.detect_every == 0:
            if self._pixels:
                self._update(
                    self.detector.detect(self._to_gray(image))[: self.max_faces], image.shape[:2]
                )
            else:
                boxes = self.detector.detect(image)[: self.max_faces]
                hw = image.shape[:2]
                if not self._unchanged(boxes, hw):
                    self._update(boxes, hw)
        return self.tracks

    def _unchanged(self, boxes: list[Box], frame_hw: tuple[int, ...]) -> bool:
        """For a size-only detector (``roi``, ``none``): when it returned the very boxes the
        tracks already hold, on a frame of the last update's shape, an update changes
        nothing but the crops' age (each track matches its own box, IoU 1, no drift), so
        only the window's relock is done. Returns False when the full update must run."""
        tracks = self.tracks
        if frame_hw != self._shape or len(boxes) != len(tracks) or not tracks:
            return False
        for box, track in zip(boxes, tracks, strict=True):
            if box is not track.box or track.missed or box.w <= 0 or box.h <= 0:
                return False
        self.detections += 1
        for track in tracks:
            if self.frame_index - track.locked_at >= self.window:
                track.crop = track.box.expanded(self.margin, frame_hw)  # type: ignore[arg-type]
                track.locked_at = self.frame_index
                self.relocks += 1
        return True

    def _update(self, boxes: list[Box], frame_hw: tuple[int, int]) -> None:
        self.detections += 1
        self.full_updates += 1
        self._shape = None  # set again below when this update can be skipped next time
        unmatched = list(boxes)
        for track in self.tracks:
            best, overlap = None, -1.0
            for box in unmatched:  # the best match by IoU; the first of equals, as max()
                iou = track.box.iou(box)
                if iou > overlap:
                    best, overlap = box, iou
            if best is not None and overlap >= self.min_iou:
                unmatched.remove(best)
                track.box, track.missed = best, 0
                age = self.frame_index - track.locked_at
                crop = best.expanded(self.margin, frame_hw)
                if age >= self.window or track.crop.drift(crop) > self.relock_drift:
                    track.crop = crop
                    track.locked_at = self.frame_index
                    self.relocks += 1
            else:
                track.missed += 1
        for track in [t for t in self.tracks if t.missed > self.max_missed]:
            self.tracks.remove(track)
            self.lost.append(track.id)
            log.info("face track %d lost", track.id)
        for box in unmatched[: max(0, self.max_faces - len(self.tracks))]:
            crop = box.expanded(self.margin, frame_hw)
            self.tracks.append(Track(self._next_id, box, crop, self.frame_index))
            log.info("face track %d started at %s", self._next_id, crop.as_tuple())
            self._next_id += 1
        if not self._pixels and self.min_iou <= 1.0:
            self._shape = frame_hw
