"""Synthetic copies of the datasets, each in its own on-disk layout, sheet, fps and look.

======== ====== ===================================================================
layout   fps    files (read back by :mod:`edge_mer.calibration.datasets`)
======== ====== ===================================================================
casme2   200    ``CASME2-coding.csv`` + ``sub01/EP01_01/img1.jpg`` (1-based frame numbers)
samm     200    ``SAMM_Micro_FACS_Codes_v2.csv`` (13-row preamble, then the header) +
                ``SAMM/006/006_1_1/006_00001.jpg``, gray frames
smic-hs  100    ``HS/s1/micro/{negative,positive,surprise}/s1_ne_01/image000001.jpg``,
                the clip's onset..offset only, no apex (as SMIC)
smic-vis 25     ``VIS/...`` as HS
smic-nir 25     ``NIR/...`` as HS, gray (near-infrared) frames
======== ====== ===================================================================

Each layout has its own population of subjects and its own camera
(:data:`~edge_mer.calibration.synth_domains.LOOKS`): the domain shift that makes
cross-dataset evaluation hard. The motions are the same four (:mod:`.synth`), written in
each dataset's words: CASME II happiness / disgust / surprise / others, SAMM Happiness /
Anger / Surprise / Other, SMIC positive / negative / surprise (SMIC has no "others").
The SAMM sheet is written as CSV (the readers take the .xlsx's content either way) so that
the same seed writes the same bytes. Every root gets a ``README.txt`` declaring ``fps``
and ``synthetic: yes`` (readers honour the fps; ``datasets summary`` says it is synthetic).
The casme2 layout's clips are :func:`~.synth.iter_clips`' (unchanged by this module).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_mer.calibration.synth import (
    _CLIP_SALT,
    EMOTIONS,
    SynthClip,
    _check_dataset,
    make_subject,
    render_clip,
)
from edge_mer.calibration.synth_domains import LOOKS
from edge_mer.errors import EdgeMerError, InputError

__all__ = ["CASME2_COLUMNS", "CASME2_SHEET", "LAYOUTS", "Layout", "layout_clips", "write_layout"]

Progress = Callable[[int, int, str], None]
CASME2_SHEET = "CASME2-coding.csv"
CASME2_COLUMNS = (
    "Subject",
    "Filename",
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    "Action Units",
    "Estimated Emotion",
)
SAMM_SHEET = "SAMM_Micro_FACS_Codes_v2.csv"
SAMM_COLUMNS = (
    "Subject",
    "Filename",
    "Inducement Code",
    "Onset Frame",
    "Apex Frame",
    "Offset Frame",
    "Duration",
    "Micro",
    "Objective Classes",
    "Notes",
    "Action Units",
    "Estimated Emotion",
)
SAMM_PREAMBLE = (
    ("SAMM micro-movement coding (synthetic copy written by edge-mer synth)",),
    ("Not real faces: procedural faces with action-unit motions.",),
    *(((),) * 11),
)
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]


@dataclass(frozen=True)
class Layout:
    """One dataset's synthetic copy: its fps, the motions it holds and the words its files
    use for them, and ``population`` (0 for CASME II; others draw their own subjects)."""

    name: str
    fps: float
    words: dict[str, str] = field(hash=False)
    population: int

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.words)


LAYOUTS = {
    lay.name: lay
    for lay in (
        Layout("casme2", 200.0, {e: e for e in EMOTIONS}, 0),
        Layout(
            "samm",
            200.0,
            {
                "happiness": "Happiness",
                "disgust": "Anger",
                "surprise": "Surprise",
                "others": "Other",
            },
            1,
        ),
        *(
            Layout(
                name,
                fps,
                {"disgust": "negative", "happiness": "positive", "surprise": "surprise"},
                k,
            )
            for k, (name, fps) in enumerate(
                (("smic-hs", 100.0), ("smic-vis", 25.0), ("smic-nir", 25.0)), start=2
            )
        ),
    )
}
_SMIC_FOLDER = {"smic-hs": "HS", "smic-vis": "VIS", "smic-nir": "NIR"}
_SMIC_CODE = {"negative": "ne", "positive": "po", "surprise": "sur"}


def replace_text(path: Path, write: Callable[[object], None]) -> None:
    """Write a text file through a temp file + os.replace: a crash leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)
    os.replace(tmp, path)


def write_csv(
    path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], preamble=()
) -> None:
    def write(f: object) -> None:
        writer = csv.writer(f)  # type: ignore[arg-type]
        writer.writerows(preamble)
        writer.writerow(header)
        writer.writerows(rows)

    replace_text(path, write)


def _write_frames(folder: Path, frames: np.ndarray, names: Sequence[str], gray: bool) -> None:
    if folder.exists():  # a rerun with --force must not keep stale frames
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for frame, name in zip(frames, names, strict=True):
        image = frame[..., 1] if gray else frame  # gray looks repeat one channel
        if not cv2.imwrite(str(folder / name), image, _JPEG):
            raise EdgeMerError(f"could not write {folder / name}")


def layout_clips(
    layout: Layout,
    *,
    subjects: int,
    clips_per_emotion: int,
    fps: float,
    size: tuple[int, int],
    seed: int,
) -> Iterator[tuple[int, int, SynthClip]]:
    """(subject index, clip index within the subject's emotion, clip) of the layout, in its
    population and look. For casme2 these are exactly :func:`~.synth.iter_clips`' clips."""
    _check_dataset(subjects, clips_per_emotion, fps, size, seed, layout.emotions)
    look = LOOKS[layout.name] if layout.population else None
    for si in range(subjects):
        subject = make_subject(seed, si + 1000 * layout.population)
        for emotion in layout.emotions:
            ei = EMOTIONS.index(emotion)
            for k in range(clips_per_emotion):
                key = [seed, si, ei, k, _CLIP_SALT] + ([layout.population] * bool(look))
                clip = render_clip(
                    subject,
                    emotion,
                    fps=fps,
                    size=size,
                    rng=np.random.default_rng(key),
                    name=f"EP{ei + 1:02d}_{k + 1:02d}",
                    look=look,
                )
                yield si, k, clip


class _Writer:
    """Common bookkeeping; subclasses write one clip in ``add`` and the sheet in ``finish``."""

    def __init__(self, layout: Layout, root: Path, fps: float, size, seed: int):
        self.layout, self.root, self.fps, self.size, self.seed = layout, Path(root), fps, size, seed
        self.rows: list[list[object]] = []
        self.frames = 0
        self.counts: Counter[str] = Counter()
        self.root.mkdir(parents=True, exist_ok=True)

    def readme(self, layout_line: str) -> None:
        h, w = self.size
        text = (
            f"Synthetic {self.layout.name} copy written by `edge-mer synth` "
            "(edge_mer.calibration.synth_layouts).\nNot real faces: procedural faces with "
            "action-unit motions, for demos, tests and protocol runs.\n\n"
            f"synthetic: yes\nfps: {self.fps:g}\nsize: {h}x{w} (height x width)\n"
            f"seed: {self.seed}\nclips: {sum(self.counts.values())}\nframes: {self.frames}\n"
            f"layout: {layout_line}\n"
        )
        replace_text(self.root / "README.txt", lambda f: f.write(text))  # type: ignore[attr-defined]


class CasmeWriter(_Writer):
    """CASME II: ``sub01/EP01_01/img1.jpg``, frame numbers 1-based; the sheet goes last."""

    def add(self, si: int, k: int, clip: SynthClip) -> None:
        n = len(clip.frames)
        _write_frames(
            self.root / f"sub{clip.subject}" / clip.name,
            clip.frames,
            [f"img{i}.jpg" for i in range(1, n + 1)],
            gray=False,
        )
        if clip.event is None:
            row = [clip.subject, clip.name, 1, (n + 1) // 2, n, "", clip.emotion]
        else:
            e = clip.event
            row = [clip.subject, clip.name, e.onset + 1, e.apex + 1, e.offset + 1, e.aus, e.emotion]
        self.rows.append(row)
        self.frames += n
        self.counts[clip.emotion] += 1

    def finish(self) -> Path:
        self.readme(f"{CASME2_SHEET} + subXX/EPee_cc/imgN.jpg, frame numbers 1-based")
        write_csv(self.root / CASME2_SHEET, CASME2_COLUMNS, self.rows)
        return self.root


class SammWriter(_Writer):
    """SAMM: ``SAMM/006/006_<e>_<k>/006_NNNNN.jpg`` (gray), numbered from the clip's place
    in an imagined recording; the sheet (with its preamble) goes last."""

    def add(self, si: int, k: int, clip: SynthClip) -> None:
        subject = f"{6 + si:03d}"
        ei = EMOTIONS.index(clip.emotion)
        name = f"{subject}_{ei + 1}_{k + 1}"
        start = 1 + 2000 * (4 * k + ei)
        n = len(clip.frames)
        _write_frames(
            self.root / "SAMM" / subject / name,
            clip.frames,
            [f"{subject}_{start + i:05d}.jpg" for i in range(n)],
            gray=True,
        )
        e = clip.event
        marks = (0, n // 2, n - 1) if e is None else (e.onset, e.apex, e.offset)
        on, apex, off = (start + m for m in marks)
        word = self.layout.words[clip.emotion]
        aus = "" if e is None else e.aus
        self.rows.append(
            [subject, name, f"{ei + 1}", on, apex, off, off - on + 1, "", "", "", aus, word]
        )
        self.frames += n
        self.counts[word] += 1

    def finish(self) -> Path:
        self.readme(f"{SAMM_SHEET} (13-row preamble) + SAMM/006/006_e_k/006_NNNNN.jpg, gray")
        write_csv(self.root / SAMM_SHEET, SAMM_COLUMNS, self.rows, SAMM_PREAMBLE)
        return self.root


class SmicWriter(_Writer):
    """SMIC: ``<HS|VIS|NIR>/s1/micro/<label>/s1_<ne|po|sur>_NN/imageNNNNNN.jpg``, the clip's
    onset..offset frames only (SMIC's micro clips); no sheet."""

    def add(self, si: int, k: int, clip: SynthClip) -> None:
        assert clip.event is not None  # SMIC layouts hold no "others"
        label = self.layout.words[clip.emotion]
        subject = f"s{si + 1}"
        self.counts[label] += 1
        number = sum(1 for r in self.rows if r[0] == subject and r[1] == label) + 1
        name = f"{subject}_{_SMIC_CODE[label]}_{number:02d}"
        e = clip.event
        frames = clip.frames[e.onset : e.offset + 1]
        start = 100_000 * si + 1000 * (4 * k + EMOTIONS.index(clip.emotion)) + 1
        folder = self.root / _SMIC_FOLDER[self.layout.name] / subject / "micro" / label / name
        names = [f"image{start + i:06d}.jpg" for i in range(len(frames))]
        _write_frames(folder, frames, names, gray=self.layout.name == "smic-nir")
        self.rows.append([subject, label, name])
        self.frames += len(frames)

    def finish(self) -> Path:
        folder = _SMIC_FOLDER[self.layout.name]
        self.readme(f"{folder}/sN/micro/<label>/sN_<code>_NN/imageNNNNNN.jpg, onset..offset")
        return self.root


def write_layout(
    name: str,
    out_dir: Path | str,
    *,
    subjects: int = 4,
    clips_per_emotion: int = 3,
    fps: float | None = None,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    progress: Progress | None = None,
    also: Callable[[SynthClip], None] | None = None,
) -> dict:
    """Write the synthetic copy of dataset ``name`` (a key of :data:`LAYOUTS`) under
    ``out_dir``; ``fps`` defaults to the dataset's own. ``also(clip)`` sees every clip
    (``edge-mer synth --videos`` writes the casme2 clips as videos too). Returns
    ``{"layout", "root", "clips", "frames", "fps", "labels": {word: clips}}``."""
    if name not in LAYOUTS:
        raise InputError(f"no synthetic layout {name!r}: choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    fps = layout.fps if fps is None else fps
    size = (int(size[0]), int(size[1]))
    cls = {"casme2": CasmeWriter, "samm": SammWriter}.get(name, SmicWriter)
    writer = cls(layout, Path(out_dir), fps, size, seed)
    total = subjects * clips_per_emotion * len(layout.emotions)
    clips = layout_clips(
        layout,
        subjects=subjects,
        clips_per_emotion=clips_per_emotion,
        fps=fps,
        size=size,
        seed=seed,
    )
    for i, (si, k, clip) in enumerate(clips):
        writer.add(si, k, clip)
        if also is not None:
            also(clip)
        if progress is not None:
            progress(i + 1, total, f"{name} subject {si + 1} {clip.name}")
    root = writer.finish()
    return {
        "layout": name,
        "root": str(root),
        "clips": total,
        "frames": writer.frames,
        "fps": float(fps),
        "labels": dict(writer.counts),
    }
