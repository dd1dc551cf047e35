"""Face stage: detectors for real (Haar on a rendered face), tracking, crop locking."""

from __future__ import annotations

import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_mer.errors import InputError  # noqa: E402
from edge_mer.pipeline.face import Box, FaceStage, FullFrame, RoiDetector, make_detector  # noqa: E402


def _face(size: int = 160, subject: int = 0) -> np.ndarray:
    from edge_mer.calibration.synth import make_subject, render_clip

    clip = render_clip(
        make_subject(3, subject),
        "others",
        fps=100,
        size=(size, size),
        rng=np.random.default_rng(subject),
        distractors=False,
    )
    return cv2.cvtColor(clip.frames[0], cv2.COLOR_BGR2GRAY)


def _scene(face: np.ndarray, x: int, y: int, shape=(360, 480)) -> np.ndarray:
    scene = np.full(shape, 90, np.uint8)
    scene[y : y + face.shape[0], x : x + face.shape[1]] = face
    return scene


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV without Haar")
def test_haar_finds_the_rendered_face() -> None:
    detector = make_detector("haar", min_face=48)
    # Subjects 2, 3, 4 and 6 of this seed are frontal enough for the cascade.
    for subject in (2, 3, 4):
        boxes = detector.detect(_scene(_face(subject=subject), 200, 100))
        assert boxes, f"the Haar cascade found no face for subject {subject}"
        assert Box(200, 100, 160, 160).iou(boxes[0]) > 0.3  # the face, not the background
    assert detector.detect(np.full((360, 480), 90, np.uint8)) == []


def test_tracks_are_stable_and_crops_stay_locked_within_a_window() -> None:
    det = RoiDetector((100, 80, 120, 120))
    stage = FaceStage(det, detect_every=1, window=8, relock_drift=0.2)
    frame = np.zeros((300, 400), np.uint8)
    crops = []
    for i in range(8):
        det.box = Box(100 + (i % 2), 80, 120, 120)  # one-pixel detector jitter
        tracks = stage.process(frame)
        assert [t.id for t in tracks] == [0]
        crops.append(tracks[0].crop)
    assert len(set(crops)) == 1, "jitter moved the locked crop inside a window"
    det.box = Box(101, 80, 120, 120)
    stage.process(frame)  # frame 8: window over, the crop relocks
    assert stage.relocks == 1


def test_large_drift_relocks_at_once() -> None:
    det = RoiDetector((100, 80, 120, 120))
    stage = FaceStage(det, detect_every=1, window=100, relock_drift=0.2)
    frame = np.zeros((300, 400), np.uint8)
    first = stage.process(frame)[0].crop
    det.box = Box(140, 80, 120, 120)  # a third of the face width: the head moved
    moved = stage.process(frame)[0]
    assert moved.id == 0 and moved.crop != first and stage.relocks == 1


class Scripted:
    def __init__(self, script: list[list[Box]]) -> None:
        self.script = script
        self.calls = 0

    def detect(self, gray: np.ndarray) -> list[Box]:
        self.calls += 1
        return self.script[min(self.calls - 1, len(self.script) - 1)]


def test_new_face_new_id_lost_face_reported_and_detect_every() -> None:
    a, b = Box(10, 10, 50, 50), Box(200, 10, 50, 50)
    det = Scripted([[a], [a, b], [b], [b], [b], [b]])
    stage = FaceStage(det, detect_every=2, max_missed=1)
    frame = np.zeros((120, 300), np.uint8)
    seen = []
    for _ in range(12):
        seen.append(([t.id for t in stage.process(frame)], list(stage.lost)))
    assert det.calls == 6  # every second frame
    assert seen[0] == ([0], []) and seen[2] == ([0, 1], [])
    assert seen[6] == ([1], [0])  # a missed twice (> max_missed=1): lost, reported once
    assert seen[7] == ([1], [])


def test_between_detections_nothing_is_allocated() -> None:
    stage = FaceStage(FullFrame(), detect_every=1000)
    frame = np.zeros((64, 64, 3), np.uint8)
    first = stage.process(frame)
    assert all(stage.process(frame) is first for _ in range(50))


def test_gray_conversion_of_bgr_frames_for_detection() -> None:
    seen = {}

    class Spy:
        def detect(self, gray):
            seen["shape"] = gray.shape
            return []

    FaceStage(Spy()).process(np.zeros((40, 50, 3), np.uint8))
    assert seen["shape"] == (40, 50)


def test_box_expansion_is_square_and_clipped() -> None:
    assert Box(30, 40, 40, 20).expanded(0.25, (100, 100)) == Box(20, 20, 60, 60)
    assert Box(0, 10, 40, 20).expanded(0.25, (100, 100)) == Box(0, 0, 50, 50)  # clipped


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        ("cnn", {}, r"choose one of \['haar', 'yunet', 'roi', 'none'\]"),
        ("yunet", {}, "needs face.yunet_model"),
        ("yunet", {"yunet_model": "/nope/yunet.onnx"}, "does not exist"),
        ("roi", {}, "needs face.roi"),
        ("roi", {"roi": (0, 0, 0, 10)}, "w, h > 0"),
    ],
)
def test_bad_detector_config(kind, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        make_detector(kind, **kwargs)


def test_haar_missing_in_opencv5_is_a_clear_error(monkeypatch) -> None:
    import edge_mer.pipeline.face as face

    class NoHaar:
        __version__ = "5.0.0"

    # The detector imports cv2 when it is built: this one has no Haar cascade (the same
    # whether the face stage runs compiled or as Python).
    monkeypatch.setitem(sys.modules, "cv2", NoHaar)
    with pytest.raises(InputError, match="opencv-python-headless<5"):
        face.HaarDetector()


class _Full:
    """A size-only detector seen as one that needs pixels: the stage runs its full update
    at every detection (the reference for the size-only shortcut)."""

    def __init__(self, det) -> None:
        self.det = det

    def detect(self, gray):
        return self.det.detect(gray)


def _state(stage: FaceStage):
    return (
        [(t.id, t.box, t.crop, t.locked_at, t.missed) for t in stage.tracks],
        list(stage.lost),
        stage.relocks,
        stage.detections,
    )


@pytest.mark.parametrize("max_faces", [1, 4])
@pytest.mark.parametrize("detect_every", [1, 3])
def test_size_only_shortcut_equals_the_full_update(detect_every: int, max_faces: int) -> None:
    rng = np.random.default_rng(0)
    roi = RoiDetector((10, 12, 30, 30))
    for det in (roi, FullFrame()):
        kw = dict(
            detect_every=detect_every, window=4, relock_drift=0.2, max_missed=1, max_faces=max_faces
        )
        fast, ref = FaceStage(det, **kw), FaceStage(_Full(det), **kw)
        shapes = [(60, 80), (48, 64)]
        for i in range(300):
            if det is roi and rng.random() < 0.05:  # the box moves a little, a lot, or vanishes
                x = int(rng.integers(0, 40))
                roi.box = Box(x, 12, 30, 30) if rng.random() < 0.8 else Box(x, 12, 0, 30)
            frame = np.zeros(shapes[int(rng.random() < 0.03)], np.uint8)
            fast.process(frame)
            ref.process(frame)
            assert _state(fast) == _state(ref), i
        assert fast.relocks > 3 and ref.detections == 300 // detect_every
        assert 0 < fast.full_updates < ref.detections / 3  # the shortcut was taken, mostly
