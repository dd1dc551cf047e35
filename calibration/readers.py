"""Clip discovery, clip loading and the INT8 calibration reader.

Every clip goes through the runtime's
:class:`~edge_mer.pipeline.preprocess.FramePreprocessor` and is resampled by seconds to the
model's fps, so calibration sees what the device will see.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.calibration.datasets.registry import detect_dataset, read_dataset
from edge_mer.calibration.datasets.schema import Sample
from edge_mer.errors import DataError, InputError
from edge_mer.pipeline.preprocess import FramePreprocessor, import_cv2

try:
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # the reader still works, duck-typed, without onnxruntime
    _ReaderBase = object  # type: ignore[assignment,misc]

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ClipSource",
    "EncoderCalibrationReader",
    "discover_clips",
    "load_clips",
    "resample_indices",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
_DIGITS = re.compile(r"\d+")
# Guards floor() against k * src / dst landing a hair below an integer.
_EPS = 1e-9


def _source_index(k: int, src_fps: float, dst_fps: float) -> int:
    return math.floor(k * src_fps / dst_fps + _EPS)


def resample_indices(n_frames: int, src_fps: float, dst_fps: float) -> np.ndarray:
    """Source frame indices (int64) for a clip of ``n_frames`` at ``src_fps`` seen at ``dst_fps``.

    One index per output time ``t = k / dst_fps`` that falls inside the clip's duration
    ``n_frames / src_fps``: the source frame shown at ``t`` (floor). 200 -> 50 fps keeps every
    4th frame; 30 -> 100 fps repeats frames; the duration is preserved to within one frame.
    """
    if not (src_fps > 0 and dst_fps > 0 and math.isfinite(src_fps) and math.isfinite(dst_fps)):
        raise InputError(
            f"cannot resample from {src_fps!r} fps to {dst_fps!r} fps: both must be positive"
        )
    if n_frames <= 0:
        return np.zeros(0, np.int64)
    n_out = math.ceil(n_frames * dst_fps / src_fps - _EPS)
    idx = np.floor(np.arange(n_out, dtype=np.float64) * (src_fps / dst_fps) + _EPS)
    return np.minimum(idx.astype(np.int64), n_frames - 1)


def _numeric_key(path: Path) -> tuple[int, str]:
    numbers = _DIGITS.findall(path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


@dataclass
class ClipSource:
    """Where one clip comes from. ``fps`` is the clip's own (None when unknown)."""

    name: str
    kind: str  # "video" | "frames" | a dataset name ("casme2", "samm", "smic-hs", ...)
    path: Path
    fps: float | None
    frame_paths: tuple[Path, ...] | None = None
    coded: Sample | None = None

    def load(
        self,
        pre: FramePreprocessor,
        *,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> np.ndarray:
        """All frames through ``pre`` -> uint8 ``[T, h, w, C]``.

        ``fps`` is the model's: when it and ``self.fps`` are both known and differ, frames are
        resampled by seconds (:func:`resample_indices`). ``max_frames`` caps T after
        resampling. Raises :class:`DataError` naming the file for an unreadable image or video.
        """
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames {max_frames!r} must be at least 1")
        resample = fps is not None and self.fps is not None and abs(fps - self.fps) > 1e-6
        if self.kind == "video":
            return self._load_video(pre, fps if resample else None, max_frames)
        if self.frame_paths is None:
            raise DataError(f"clip {self.name!r} has no frame list: discover it again")
        n = len(self.frame_paths)
        if n == 0:
            raise DataError(f"clip {self.name!r} in {str(self.path)!r} has no frames")
        if resample:
            assert fps is not None and self.fps is not None
            indices = resample_indices(n, self.fps, fps)
        else:
            indices = np.arange(n)
        if max_frames is not None:
            indices = indices[:max_frames]
        cv2 = import_cv2("reading image frames")
        out = np.empty((len(indices), *pre.shape), np.uint8)
        previous = -1
        for t, i in enumerate(indices.tolist()):
            if i == previous:  # upsampling repeats a frame: copy, do not decode again
                out[t] = out[t - 1]
                continue
            path = self.frame_paths[i]
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError(
                    f"cannot read image {str(path)!r}: not an image OpenCV can decode; "
                    "replace or remove the file"
                )
            pre(image, out=out[t])
            previous = i
        return out

    def _load_video(
        self, pre: FramePreprocessor, dst_fps: float | None, max_frames: int | None
    ) -> np.ndarray:
        cv2 = import_cv2("reading videos")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise DataError(
                    f"cannot open video {str(self.path)!r}: not a video OpenCV can decode; "
                    "re-encode it (e.g. ffmpeg -i IN -c:v mjpeg OUT.avi) or remove it"
                )
            frames = list(self._decode(cap, pre, dst_fps, max_frames))
        finally:
            cap.release()
        if not frames:
            raise DataError(
                f"video {str(self.path)!r} yielded no frames: it is empty or its codec is "
                "not supported by this OpenCV build; re-encode it or remove it"
            )
        return np.stack(frames)

    def _decode(
        self, cap: object, pre: FramePreprocessor, dst_fps: float | None, max_frames: int | None
    ) -> Iterator[np.ndarray]:
        """Stream frames, keeping (or repeating) only those :func:`resample_indices` picks.

        Source frame i is shown at every output k with floor(k * src / dst) == i, which is
        the same selection as resample_indices once the frame count is known.
        """
        k = 0
        i = 0
        while max_frames is None or k < max_frames:
            ok, frame = cap.read()  # type: ignore[attr-defined]
            if not ok or frame is None:
                return
            if dst_fps is None:
                yield pre(frame)
                k += 1
            else:
                assert self.fps is not None
                processed = None
                while _source_index(k, self.fps, dst_fps) == i and (
                    max_frames is None or k < max_frames
                ):
                    if processed is None:
                        processed = pre(frame)
                    yield processed
                    k += 1
            i += 1


def _video_fps(path: Path, default_fps: float | None) -> float | None:
    cv2 = import_cv2("reading videos")
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    if not math.isfinite(fps) or fps <= 0:
        log.info("%s has no frame rate in its container, assuming %s fps", path, default_fps)
        return default_fps
    return fps


def _video_source(path: Path, root: Path, default_fps: float | None) -> ClipSource:
    name = path.name if path == root else path.relative_to(root).as_posix()
    return ClipSource(name, "video", path, _video_fps(path, default_fps))


def _dataset_clips(path: Path) -> list[ClipSource] | None:
    """The samples of a dataset root as clips, or None when ``path`` is not one."""
    name = detect_dataset(path)
    if name is None:
        return None
    copy = read_dataset(name, path)
    for p in copy.problems:
        log.warning("%s: %s (%s)", p.sample, p.detail, p.kind)
    return [
        ClipSource(s.id, name, s.frame_paths[0].parent, s.fps, frame_paths=s.frame_paths, coded=s)
        for s in copy.samples
    ]


def discover_clips(path: Path, *, default_fps: float | None = None) -> list[ClipSource]:
    """Find the clips at ``path``, in a stable (sorted) order.

    ``path`` is a video file (.mp4 .avi .mkv .mov), a CASME II root (see
    :func:`~edge_mer.calibration.datasets.detect_dataset`: CASME II, SAMM, SMIC, CAS(ME)^3),
    whose samples are the clips (named by sample id, problems logged), or a folder searched
    recursively:
    every video is a clip and every folder holding images (.jpg .png .bmp, ordered by the
    last number in their names) is one clip. Videos take their fps from the container
    (``default_fps`` when it has none); frame folders get ``default_fps``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"clip path {str(path)!r} does not exist: pass a video, a folder of videos or "
            "frames, or a CASME II root"
        )
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return [_video_source(path, path, default_fps)]
        raise DataError(
            f"clip file {str(path)!r} is not a video: expected one of "
            f"{sorted(VIDEO_SUFFIXES)!r}, or pass the folder that holds the frames"
        )
    coded = _dataset_clips(path)
    if coded is not None:
        return coded
    clips: list[ClipSource] = []
    for folder, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(folder)
        files = [here / f for f in sorted(filenames) if not f.startswith(".")]
        images = sorted((f for f in files if f.suffix.lower() in IMAGE_SUFFIXES), key=_numeric_key)
        if images:
            name = here.name if here == path else here.relative_to(path).as_posix()
            clips.append(ClipSource(name, "frames", here, default_fps, frame_paths=tuple(images)))
        clips.extend(
            _video_source(f, path, default_fps) for f in files if f.suffix.lower() in VIDEO_SUFFIXES
        )
    if not clips:
        raise DataError(
            f"no clips in {str(path)!r}: expected videos, frame folders or a CASME II root "
            "(CASME2-coding.csv + subXX/)"
        )
    return clips


def load_clips(
    path: Path,
    pre: FramePreprocessor,
    *,
    fps: float | None,
    min_clips: int = 1,
    max_frames_per_clip: int | None = None,
    progress: Callable[[int, int, ClipSource], None] | None = None,
) -> tuple[list[np.ndarray], list[ClipSource]]:
    """Discover the clips at ``path`` and load each through ``pre`` at the model's ``fps``.

    Returns the loaded clips (uint8 ``[T, h, w, C]``) and their sources, in the same order.
    A clip that cannot be read is logged and left out; :class:`DataError` when fewer than
    ``min_clips`` remain. ``progress(done, total, source)`` is called after each clip.
    """
    sources = discover_clips(path, default_fps=fps)
    clips: list[np.ndarray] = []
    loaded: list[ClipSource] = []
    failures: list[str] = []
    for n, source in enumerate(sources, start=1):
        try:
            clip = source.load(pre, fps=fps, max_frames=max_frames_per_clip)
        except DataError as e:
            log.warning("skipping clip %s: %s", source.name, e)
            failures.append(str(e))
        else:
            clips.append(clip)
            loaded.append(source)
        if progress is not None:
            progress(n, len(sources), source)
    if len(clips) < min_clips:
        unreadable = f" ({len(failures)} unreadable, first: {failures[0]})" if failures else ""
        raise DataError(
            f"found {len(clips)} clips in {str(path)!r}, need at least {min_clips} for "
            f"calibration plus the held-out check; add clips or lower --holdout{unreadable}"
        )
    return clips, loaded


class EncoderCalibrationReader(_ReaderBase):
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed clips.

    ``get_next()`` returns ``{input_name: uint8 [B, h, w, C]}`` (B <= ``batch_size``; batches
    run across clip boundaries, since the encoder sees single frames), then ``None`` until
    :meth:`rewind`. Every ``frame_stride``-th frame of each clip is used. The clips are
    referenced, not copied; each batch is a new array.
    """

    def __init__(
        self,
        clips: Sequence[np.ndarray],
        *,
        input_name: str = "frames",
        batch_size: int = 32,
        frame_stride: int = 1,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"calibration batch_size {batch_size!r} must be at least 1")
        if frame_stride < 1:
            raise InputError(f"calibration frame_stride {frame_stride!r} must be at least 1")
        if len(clips) == 0:
            raise DataError("no calibration clips: pass at least one clip")
        frame_shape = None
        for i, clip in enumerate(clips):
            if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4:
                desc = (
                    f"{clip.dtype} {tuple(clip.shape)}"
                    if isinstance(clip, np.ndarray)
                    else type(clip).__name__
                )
                raise DataError(
                    f"calibration clip {i} is {desc!r}: expected uint8 [T,h,w,C] from "
                    "FramePreprocessor"
                )
            if frame_shape is None:
                frame_shape = clip.shape[1:]
            elif clip.shape[1:] != frame_shape:
                raise DataError(
                    f"calibration clip {i} has frames {tuple(clip.shape[1:])!r}, clip 0 has "
                    f"{tuple(frame_shape)!r}: preprocess every clip with the same "
                    "FramePreprocessor"
                )
        self.input_name = input_name
        self.batch_size = int(batch_size)
        self.frame_stride = int(frame_stride)
        self._frames = [clip[:: self.frame_stride] for clip in clips]
        self._batches = self._plan()
        self._next = 0

    def _plan(self) -> list[list[tuple[int, int, int]]]:
        """Batches as lists of (clip, start, stop) slices of the strided clips."""
        batches: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        room = self.batch_size
        for c, frames in enumerate(self._frames):
            start = 0
            while start < len(frames):
                stop = min(len(frames), start + room)
                current.append((c, start, stop))
                room -= stop - start
                start = stop
                if room == 0:
                    batches.append(current)
                    current, room = [], self.batch_size
        if current:
            batches.append(current)
        return batches

    @property
    def num_frames(self) -> int:
        """Frames served per pass (after the stride)."""
        return sum(len(f) for f in self._frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        parts = [self._frames[c][a:b] for c, a, b in self._batches[self._next]]
        self._next += 1
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return {self.input_name: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0

    def __len__(self) -> int:
        return len(self._batches)
