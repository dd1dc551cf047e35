"""Sources that replay recordings: video files (``file://``) and frame folders (``frames://``).

Both read as fast as the consumer takes frames unless ``?realtime=1`` paces them to their
timestamps (:class:`Pacer`); frames carry the recording's own clock.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.errors import DataError, InputError
from edge_mer.pipeline.sources import (
    IMAGE_SUFFIXES,
    Frame,
    SourceBase,
    SourceEnded,
    SourceSpec,
)

log = logging.getLogger(__name__)


class Pacer:
    """Optional real-time pacing for media sources: frame ``seq`` is released at
    ``start + ts``. ``wait(ts, timeout)`` returns False if that moment is past the deadline."""

    def __init__(self) -> None:
        self._start: float | None = None

    def reset(self) -> None:
        self._start = None

    def wait(self, ts: float, timeout: float) -> bool:
        now = time.monotonic()
        if self._start is None:
            self._start = now - ts
        due = self._start + ts
        if due - now > max(timeout, 0.0):
            time.sleep(max(timeout, 0.0))
            return False
        if due > now:
            time.sleep(due - now)
        return True


class FileSource(SourceBase):
    """A video file through ``cv2.VideoCapture``. ``ts = seq / fps`` with the container's
    fps (option ``fps=`` overrides a missing or wrong one). A decode failure before the
    frame count the container announced ends the stream with a warning and ``errors += 1``.
    Options: ``fps``, ``realtime`` (pace reads at the video's rate, like a camera)."""

    OPTIONS = ("fps", "realtime")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        spec.check_options(self.OPTIONS)
        if not spec.target:
            raise InputError(f"source {spec.uri!r}: file:// needs a path, e.g. file://clip.mp4")
        self.path = Path(spec.target).expanduser()
        self._fps_option = spec.get_float("fps", None)
        self._pacer = Pacer() if spec.get_bool("realtime", False) else None
        self._cap: Any = None
        self._buf: np.ndarray | None = None
        self._index = 0
        self._count = 0

    def _open(self) -> None:
        from edge_mer.pipeline.preprocess import import_cv2

        if not self.path.is_file():
            raise InputError(
                f"source {self.uri!r}: video file {str(self.path)!r} does not exist"
                if not self.path.exists()
                else f"source {self.uri!r}: {str(self.path)!r} is not a file "
                "(an image folder is frames://DIR)"
            )
        cv2 = import_cv2("reading video files")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise DataError(
                f"source {self.uri!r}: OpenCV cannot decode {str(self.path)!r} "
                "(unsupported or broken container/codec)"
            )
        fps = cap.get(cv2.CAP_PROP_FPS)
        if self._fps_option is not None:
            fps = self._fps_option
        elif not (math.isfinite(fps) and fps > 0):
            log.warning("%s: the container has no frame rate; assuming 30 fps (set ?fps=)", self)
            fps = 30.0
        self._fps = float(fps)
        self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._cap, self._index = cap, 0
        if self._pacer:
            self._pacer.reset()

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise SourceEnded(f"{self} is not open")
        ts = self._index / self._fps  # type: ignore[operator]
        if self._pacer and not self._pacer.wait(ts, timeout):
            return None
        ok, image = self._cap.read(self._buf)
        if not ok or image is None:
            if self._count and self._index < self._count:
                self.errors += 1
                log.warning(
                    "%s: stream broke at frame %d of %d (truncated or corrupt file)",
                    self,
                    self._index,
                    self._count,
                )
            self.close()
            raise SourceEnded(f"{self}: end of video after {self._index} frames")
        self._buf = image
        self._index += 1
        return Frame(self._next_seq(), ts, image)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _natural_key(name: str) -> list[Any]:
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


class FramesSource(SourceBase):
    """A folder of images, in numeric order (``frame2.png`` before ``frame10.png``).
    ``ts = seq / fps``. Options: ``fps`` (default 30), ``gray`` (read as [H, W]),
    ``realtime``. An unreadable image is skipped with a warning and ``errors += 1``."""

    OPTIONS = ("fps", "gray", "realtime")

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        spec.check_options(self.OPTIONS)
        if not spec.target:
            raise InputError(f"source {spec.uri!r}: frames:// needs a folder, e.g. frames://dir")
        self.folder = Path(spec.target).expanduser()
        self._fps = spec.get_float("fps", 30.0)
        self._gray = spec.get_bool("gray", False)
        self._pacer = Pacer() if spec.get_bool("realtime", False) else None
        self._files: list[Path] = []
        self._index = 0
        self._cv2: Any = None

    def _open(self) -> None:
        from edge_mer.pipeline.preprocess import import_cv2

        if not self.folder.is_dir():
            raise InputError(
                f"source {self.uri!r}: image folder {str(self.folder)!r} does not exist"
            )
        files = [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise InputError(
                f"source {self.uri!r}: no images ({', '.join(IMAGE_SUFFIXES)}) "
                f"in {str(self.folder)!r}"
            )
        self._files = sorted(files, key=lambda p: _natural_key(p.name))
        self._cv2 = import_cv2("reading image folders")
        self._index = 0
        if self._pacer:
            self._pacer.reset()

    def read(self, timeout: float) -> Frame | None:
        cv2 = self._cv2
        flag = cv2.IMREAD_GRAYSCALE if self._gray else cv2.IMREAD_COLOR
        while self._index < len(self._files):
            ts = self._index / self._fps  # type: ignore[operator]
            if self._pacer and not self._pacer.wait(ts, timeout):
                return None
            path = self._files[self._index]
            self._index += 1
            image = cv2.imread(str(path), flag)
            if image is None:
                self.errors += 1
                log.warning("%s: cannot read image %s; skipped", self, path.name)
                continue
            return Frame(self._next_seq(), ts, image)
        raise SourceEnded(f"{self}: end of folder after {len(self._files)} images")
