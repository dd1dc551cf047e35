"""The frame cache: each dataset's samples decoded, cropped and resized once per input size.

Every job of a study reads its clips from here instead of decoding images: one folder per
(dataset copy, height, width, channels, fps, face crop) holding one ``.npy`` per sample
(uint8 ``[T, H, W, C]`` at the model's fps, resampled by seconds) and ``index.json`` with
each sample's event indices at that fps. ``index.json`` is written last; a sample file is
written atomically, so a cache killed half-way is completed, never trusted half-built.

The face crop (``face = "haar"``) is the device's: OpenCV's Haar cascade on the clip's first
frame, the largest face expanded by a margin into a square, locked for the whole clip (the
device locks its crop per window). A clip where no face is found keeps the whole frame and
is counted in ``index.json``. ``face = "none"`` resizes whole frames (cropped dataset
releases, synthetic clips).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.convert.experiment.jobs import read_json, write_json
from edge_mer.errors import DataError, InputError

CACHE_VERSION = 2  # 2: gray crops are converted before they are resized (other pixels)
FACE_MARGIN = 0.2
Say = Callable[[str], None]


@dataclass(frozen=True)
class CacheSpec:
    """What a model reads: frame size, channels, fps, and how faces are cropped."""

    height: int
    width: int
    channels: int
    fps: float
    face: str = "haar"  # "haar" | "none"

    def key(self, dataset: str, root: Path) -> str:
        body = {"v": CACHE_VERSION, "dataset": dataset, "root": str(Path(root).resolve())}
        body |= asdict(self)
        text = json.dumps(body, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.height}x{self.width}x{self.channels}@{self.fps:g}fps-{self.face}"


def sample_file(sample_id: str) -> str:
    """A file name for ``dataset/subject/clip`` (readable, and unique by a short hash)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample_id)[:80]
    return f"{safe}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}.npy"


def at_fps(index: int | None, src_fps: float, dst_fps: float, n: int) -> int | None:
    """A frame index of the source clip as an index at ``dst_fps`` (clipped to ``n``)."""
    if index is None:
        return None
    return min(n - 1, max(0, round(index * dst_fps / src_fps)))


class _Cropped:
    """A FramePreprocessor with a fixed crop box (what ClipSource.load calls per frame)."""

    def __init__(self, pre: Any, box: tuple[int, int, int, int] | None) -> None:
        self.pre, self.box, self.shape = pre, box, pre.shape

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.pre(image, box=self.box, out=out)


def _face_box(path: Path, detector: Any) -> tuple[int, int, int, int] | None:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"cannot read image {str(path)!r}; replace or remove the file")
    boxes = detector.detect(image)
    if not boxes:
        return None
    return boxes[0].expanded(FACE_MARGIN, image.shape[:2]).as_tuple()


def load_sample(sample: Any, spec: CacheSpec, detector: Any = None) -> tuple[np.ndarray, bool]:
    """Decode one sample as the cache stores it: (frames, face found)."""
    from edge_mer.calibration.readers import ClipSource
    from edge_mer.pipeline.preprocess import FramePreprocessor

    pre = FramePreprocessor(spec.height, spec.width, spec.channels)
    box = None
    if spec.face == "haar":
        box = _face_box(sample.frame_paths[0], detector)
    src = ClipSource(
        name=sample.id,
        kind="frames",
        path=sample.frame_paths[0].parent,
        fps=sample.fps,
        frame_paths=tuple(sample.frame_paths),
    )
    frames = src.load(_Cropped(pre, box), fps=spec.fps)
    return frames, box is not None or spec.face == "none"


def _entry(sample: Any, label: str, spec: CacheSpec, n: int, face: bool) -> dict[str, Any]:
    def idx(i: int | None) -> int | None:
        return at_fps(i, sample.fps, spec.fps, n)

    return {
        "file": sample_file(sample.id),
        "frames": n,
        "dataset": sample.dataset,
        "subject": sample.subject_key,
        "label": label,
        "onset": idx(sample.onset_index),
        "apex": idx(sample.apex_index),
        "offset": idx(sample.offset_index),
        "source_fps": sample.fps,
        "face_found": face,
    }


def build(
    folder: Path,
    dataset: str,
    root: Path,
    samples: Sequence[Any],
    labels: dict[str, str],
    spec: CacheSpec,
    *,
    workers: int = 1,
    say: Say | None = None,
) -> Path:
    """Cache ``samples`` (of one dataset copy) for ``spec``; returns the cache folder.

    ``labels`` maps each sample id to the label the study scores it by. A folder whose
    ``index.json`` already lists every sample with the same labels is reused as it is.
    """
    say = say or (lambda _m: None)
    if spec.face not in ("haar", "none"):
        raise InputError(f"face crop {spec.face!r}: choose 'haar' or 'none'")
    out = folder / f"{dataset}-{spec.key(dataset, root)}"
    index_path = out / "index.json"
    index = read_json(index_path)
    wanted = {s.id: labels[s.id] for s in samples}
    if index is not None and {k: v["label"] for k, v in index["samples"].items()} == wanted:
        return out
    out.mkdir(parents=True, exist_ok=True)
    detector = None
    if spec.face == "haar":
        from edge_mer.pipeline.face import HaarDetector

        detector = HaarDetector()
    entries: dict[str, dict[str, Any]] = {}

    def one(sample: Any) -> tuple[str, dict[str, Any]]:
        path = out / sample_file(sample.id)
        previous = (index or {}).get("samples", {}).get(sample.id)
        if previous is not None and path.exists():
            return sample.id, {**previous, "label": labels[sample.id]}
        frames, face = load_sample(sample, spec, detector)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, frames)
        os.replace(tmp, path)
        return sample.id, _entry(sample, labels[sample.id], spec, len(frames), face)

    say(f"caching {len(samples)} {dataset} clips at {spec.label}")
    # OpenCV releases the GIL while decoding: threads share the work.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for sid, entry in pool.map(one, samples):
            entries[sid] = entry
    write_json(
        index_path,
        {
            "version": CACHE_VERSION,
            "dataset": dataset,
            "root": str(Path(root).resolve()),
            "spec": asdict(spec),
            "samples": dict(sorted(entries.items())),
            "faces_not_found": sorted(k for k, v in entries.items() if not v["face_found"]),
        },
    )
    return out


class CacheReader:
    """Read access to built cache folders (one per dataset) for one spec."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.files: dict[str, Path] = {}
        for folder in folders:
            index = read_json(Path(folder) / "index.json")
            if index is None:
                raise DataError(f"frame cache {str(folder)!r} has no index.json: rebuild it")
            for sid, entry in index["samples"].items():
                self.entries[sid] = entry
                self.files[sid] = Path(folder) / entry["file"]

    def frames(self, sample_id: str) -> np.ndarray:
        try:
            return np.load(self.files[sample_id], mmap_mode="r")
        except KeyError:
            raise DataError(f"sample {sample_id!r} is not in the frame cache") from None
