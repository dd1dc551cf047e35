"""Training streams for a study (``[train] streams = true``): what a stream holds between
micro-expressions becomes each fold's background class.

A dataset root may hold ``streams/`` beside its clips (:mod:`edge_mer.calibration.
stream_files`: one continuous video per subject and its coded events; ``edge-mer synth``
writes them for synthetic subjects). With the key on:

1. At plan time (before any job) every dataset the protocol trains on must have streams,
   at least one of them must name a subject of the dataset's clips (stream subjects are
   normalised as the dataset's reader names subjects, then keyed ``dataset/subject`` as
   folds are), and every coded emotion must be one the study's label map knows
   (:func:`check_study_streams`; one line otherwise, exit 2).
2. The stream cache (:func:`build`), like the frame cache: one folder per (dataset copy,
   input spec) with one ``.npy`` per stream (uint8 ``[N, H, W, C]`` at the model's fps,
   resampled by seconds; whole frames, or with ``face = "haar"`` the device's detector on the
   stream's first frame, the box locked for the stream as it is for a clip) and
   ``index.json`` (subject key, events as frame indices at that fps with their coded
   emotion), written last. A stream whose video or events changed is decoded again.
3. Each job loads the streams of its fold's TRAINING subjects only (:func:`fold_streams`):
   never a validation or a test subject's, never a subject outside the fold.
   :func:`check_fold_streams` asserts it on what reaches training, and raises otherwise.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.convert.experiment.cache import FACE_MARGIN, CacheSpec, _Cropped, sample_file
from edge_mer.convert.experiment.jobs import FoldSpec, read_json, write_json
from edge_mer.errors import DataError, EdgeMerError, InputError

STREAMS_VERSION = 1
BACKGROUND = "none"  # the class a stream's background windows carry (edge-mer train's)
Say = Callable[[str], None]


def training_datasets(protocol: Any) -> list[str]:
    """The datasets whose subjects train in some fold of the protocol (their streams are
    needed); a cross study's test datasets never train, so their streams are never read."""
    if protocol.kind == "cross":
        return [str(protocol.train)]
    return list(protocol.dataset_names())


def subject_key(dataset: str, text: str) -> str:
    """A stream's subject as the dataset's reader keys its clips' subjects: ``casme2/01``
    for "1", "01" or "sub01"; ``samm/006`` for "6"; others (SMIC's ``s3``, CAS(ME)^3's
    ``spNO.1``) as written, as their readers keep them."""
    from edge_mer.calibration.datasets import casme2, samm

    normalise = {"casme2": casme2.subject_id, "samm": samm.subject_id}.get(dataset, str.strip)
    value = normalise(text)
    return f"{dataset}/{value}"


def stream_label_map(study: Any) -> Any:
    """The label map the study's clips are labelled by (megc2019: the official megc3)."""
    from edge_mer.calibration.datasets import get_map

    proto = study.protocol
    return get_map("megc3" if proto.kind == "megc2019" else proto.label_map)


def check_study_streams(study: Any, samples: dict[str, Any], say: Say) -> dict[str, list[str]]:
    """Refuse, in one line, a study whose training datasets have no usable streams; returns
    dataset -> the stream subject keys found. See the module docstring (1)."""
    from edge_mer.calibration.stream_files import STREAMS_DIR, find_streams

    label_map = stream_label_map(study)
    found: dict[str, list[str]] = {}
    for name in training_datasets(study.protocol):
        root = Path(study.data[name])
        coded = find_streams(root)  # a broken streams.csv: DataError naming the file and row
        if not coded:
            raise InputError(
                f"[train] streams = true, but the {name} root {str(root)!r} has no "
                f"{STREAMS_DIR}/ folder: add one video and events file per subject there, "
                f"listed in {STREAMS_DIR}/streams.csv (edge-mer synth --subject-streams writes "
                "them for synthetic data; docs/experiments.md), or set [train] streams = false"
            )
        keys = sorted({subject_key(name, c.subject) for c in coded})
        clips = {s.subject_key for s in samples.values() if s.dataset == name}
        if not set(keys) & clips:
            raise InputError(
                f"none of the {len(coded)} streams of {str(root / STREAMS_DIR)!r} names a "
                f"subject of the {name} clips (streams: {', '.join(keys[:4])}; clips: "
                f"{', '.join(sorted(clips)[:4])}): fix the subject column of streams.csv"
            )
        for c in coded:
            for e in c.events:
                if e.kind == "micro":
                    try:
                        label_map.label(e.emotion)
                    except InputError as exc:
                        raise InputError(f"{str(c.video)!r} (events): {exc}") from None
        unused = sorted(set(keys) - clips)
        if unused:
            say(f"{name}: streams of {len(unused)} subject(s) without clips are never used")
        lacking = sorted(clips - set(keys))
        if lacking:
            say(f"{name}: {len(lacking)} subject(s) have clips but no stream")
        found[name] = keys
    return found


def check_train_fn(name: str, train_fn: str) -> None:
    """A user's train_fn must take ``streams`` (or ``**kwargs``) when the study trains on
    streams: refused before any job, in one line, rather than silently trained without."""
    from edge_mer.convert.checkpoint import _load_factory

    params = inspect.signature(_load_factory(train_fn)).parameters.values()
    if not any(p.name == "streams" or p.kind is p.VAR_KEYWORD for p in params):
        raise InputError(
            f"model {name!r}: train_fn {train_fn!r} takes no 'streams' argument, and "
            "[train] streams = true: add streams=None to it and pass it on to "
            "edge_mer.convert.train.fit, or set [train] streams = false"
        )


def _first_frame_box(video: Path, detector: Any) -> tuple[int, int, int, int] | None:
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise DataError(f"cannot read the first frame of {str(video)!r}: re-encode the video")
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    boxes = detector.detect(gray)
    if not boxes:
        return None
    return boxes[0].expanded(FACE_MARGIN, gray.shape[:2]).as_tuple()


def _fingerprint(coded: Any, subject: str) -> dict[str, Any]:
    st = coded.video.stat()
    events = [[e.kind, e.emotion, e.onset_s, e.apex_s, e.offset_s] for e in coded.events]
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "events": events, "subject": subject}


def _load(coded: Any, spec: CacheSpec, detector: Any) -> tuple[np.ndarray, bool]:
    from edge_mer.pipeline.preprocess import FramePreprocessor

    pre = FramePreprocessor(spec.height, spec.width, spec.channels)
    box = _first_frame_box(coded.video, detector) if spec.face == "haar" else None
    return coded.load(_Cropped(pre, box), spec.fps), box is not None or spec.face == "none"


def build(
    folder: Path,
    dataset: str,
    root: Path,
    spec: CacheSpec,
    *,
    workers: int = 1,
    say: Say | None = None,
) -> Path:
    """Cache the streams of ``root/streams/`` for ``spec``; returns the cache folder (see
    the module docstring (2)). A folder whose index lists the same streams unchanged is
    reused as it is."""
    from edge_mer.calibration.stream_files import find_streams

    say = say or (lambda _m: None)
    out = folder / f"streams-{dataset}-{spec.key(dataset, root)}"
    index = read_json(out / "index.json") or {}
    coded = {c.name: c for c in find_streams(Path(root))}
    prints = {n: _fingerprint(c, subject_key(dataset, c.subject)) for n, c in coded.items()}
    old = index.get("streams", {})
    if old.keys() == prints.keys() and all(old[n]["source"] == prints[n] for n in prints):
        return out
    out.mkdir(parents=True, exist_ok=True)
    detector = None
    if spec.face == "haar":
        from edge_mer.pipeline.face import HaarDetector

        detector = HaarDetector()

    def one(name: str) -> tuple[str, dict[str, Any]]:
        c, path = coded[name], out / sample_file(f"{dataset}/stream/{name}")
        previous = old.get(name)
        if previous is not None and previous["source"] == prints[name] and path.exists():
            return name, previous
        frames, face = _load(c, spec, detector)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, frames)
        os.replace(tmp, path)
        n = len(frames)

        def at(seconds: float) -> int:
            return min(n - 1, max(0, round(seconds * spec.fps)))

        marks = [(e.onset_s, e.apex_s, e.offset_s) for e in c.events]
        events = [[e.kind, e.emotion, *map(at, m)] for e, m in zip(c.events, marks, strict=True)]
        entry = {
            "file": path.name,
            "subject": prints[name]["subject"],
            "frames": n,
            "events": events,
            "synthetic": list(c.synthetic) if c.synthetic else None,
            "face_found": face,
            "source": prints[name],
        }
        return name, entry

    say(f"caching {len(coded)} {dataset} streams at {spec.label}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        entries = dict(pool.map(one, sorted(coded)))
    write_json(
        out / "index.json",
        {
            "version": STREAMS_VERSION,
            "dataset": dataset,
            "root": str(Path(root).resolve()),
            "spec": asdict(spec),
            "streams": entries,
        },
    )
    return out


class StreamReader:
    """Read access to built stream caches (one folder per dataset) for one spec."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.entries: list[tuple[Path, str, dict[str, Any]]] = []
        for folder in folders:
            index = read_json(Path(folder) / "index.json")
            if index is None:
                raise DataError(f"stream cache {str(folder)!r} has no index.json: rebuild it")
            for name, entry in sorted(index["streams"].items()):
                self.entries.append((Path(folder), name, {**entry, "fps": index["spec"]["fps"]}))

    def load(self, folder: Path, name: str, entry: dict[str, Any], label: Callable) -> Any:
        """One stream as a :class:`~edge_mer.convert.train_streams.TrainStream` (frames
        mapped from the cache; ``label(emotion)``: a micro-expression's model label or None)."""
        from edge_mer.convert.train_streams import StreamEvent, TrainStream

        # Copy-on-write map: pages are read when training touches them and shared with the
        # other jobs on this machine (one CASME II LOSO fold would otherwise hold 25 streams).
        frames = np.load(folder / entry["file"], mmap_mode="c")
        events = [
            StreamEvent(kind, label(emotion) if kind == "micro" else None, a, p, b)
            for kind, emotion, a, p, b in entry["events"]
        ]
        synthetic = tuple(entry["synthetic"]) if entry["synthetic"] else None
        return TrainStream(frames, events, entry["subject"], name, float(entry["fps"]), synthetic)


def fold_streams(
    fold: FoldSpec, reader: StreamReader, labels: Sequence[str], label_map: Any
) -> list[Any]:
    """The streams of ``fold``'s training subjects, emotions mapped by the study's
    ``label_map`` to the model's ``labels`` (a dropped emotion or one the model has no class
    for is left out of training, neither an emotion nor background)."""

    def label(emotion: str) -> str | None:
        name = label_map.label(emotion)
        return name if name in labels else None

    train = set(fold.train_subjects)
    streams = [reader.load(f, n, e, label) for f, n, e in reader.entries if e["subject"] in train]
    check_fold_streams(fold, streams)
    return streams


def check_fold_streams(fold: FoldSpec, streams: Sequence[Any]) -> None:
    """Raise if a stream that is not a training subject's would reach training."""
    if not streams:
        raise EdgeMerError(
            f"fold {fold.id}: none of its training subjects has a stream; add their streams "
            "or set [train] streams = false"
        )
    outside = sorted({s.subject for s in streams} - set(fold.train_subjects))
    if outside:
        test = sorted(set(outside) & set(fold.test_subjects))
        val = sorted(set(outside) & set(fold.validation_subjects))
        raise EdgeMerError(
            f"fold {fold.id}: streams of {outside} reached training but are not its training "
            f"subjects (test subjects {test}, validation subjects {val}); nothing was trained"
        )
