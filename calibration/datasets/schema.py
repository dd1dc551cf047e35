"""One sample schema for every micro-expression dataset, and what a reader returns.

A :class:`Sample` is one coded micro-expression: where it comes from (``dataset``,
``subject``, ``clip``), its frame marks (``onset``, ``apex`` or ``None``, ``offset``, in the
dataset's own frame numbers), ``fps``, the emotion *as the sheet (or folder) says it* and its
frames sorted numerically. Its id ``dataset/subject/clip`` is stable: the same sample has
the same id whatever order the sheet lists it in, and ids never contain anything but text
("01" stays "01").

A reader returns a :class:`DatasetCopy`: the complete samples, and per sample what is wrong
with the copy on disk (:class:`Problem`: a missing folder, no frames, a gap in the frame
numbers, marks outside the frames) and which known defects of the official files it met
and how it handled them (:class:`~edge_mer.calibration.datasets.errata.Erratum`). Nothing is
skipped silently: a sheet row without frames is a ``missing`` problem, never just absent.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge_mer.errors import DataError

__all__ = [
    "MISSING_KINDS",
    "DatasetCopy",
    "Problem",
    "Sample",
    "declared_fps",
    "frame_problems",
    "is_synthetic",
    "list_frames",
    "readme_fields",
    "require_usable",
    "sample_id",
]

_TRAILING_NUMBER = re.compile(r"(\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)
# Problems that mean the sample cannot be used at all (it is not in DatasetCopy.samples).
MISSING_KINDS = frozenset({"missing-folder", "no-frames", "bad-marks"})


def sample_id(dataset: str, subject: str, clip: str) -> str:
    """The stable id ``dataset/subject/clip`` (all three are text)."""
    return f"{dataset}/{subject}/{clip}"


@dataclass(frozen=True)
class Sample:
    """One coded micro-expression clip.

    ``onset``, ``apex`` and ``offset`` are the dataset's frame numbers (the numbers in the
    frame file names); ``apex`` is ``None`` where the dataset has none (SMIC) or the sheet's
    is unusable (see the errata). ``frame_paths`` are sorted by ``frame_numbers``.
    ``emotion`` is the sheet's text, stripped; :attr:`canonical_emotion` is its normalised
    form (:func:`~edge_mer.calibration.datasets.labels.normalise_emotion`).
    """

    dataset: str
    subject: str
    clip: str
    onset: int
    apex: int | None
    offset: int
    fps: float
    emotion: str
    frame_paths: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    action_units: str = ""
    objective_class: str = ""

    @property
    def id(self) -> str:
        """``dataset/subject/clip``."""
        return sample_id(self.dataset, self.subject, self.clip)

    @property
    def filename(self) -> str:
        """The clip's name as the sheets' Filename column calls it (same as ``clip``; the
        name callers of the former ``CodedClip`` use)."""
        return self.clip

    @property
    def subject_key(self) -> str:
        """``dataset/subject``: subjects of different datasets never collide."""
        return f"{self.dataset}/{self.subject}"

    @property
    def canonical_emotion(self) -> str:
        """The emotion normalised for label maps ("Other" -> "others", "happy" ->
        "happiness"); unknown words come back lower-cased."""
        from edge_mer.calibration.datasets.labels import normalise_emotion

        return normalise_emotion(self.emotion, strict=False)

    def index_of(self, frame_number: int) -> int:
        """Index into ``frame_paths`` of ``frame_number``, or of the nearest frame present."""
        numbers = self.frame_numbers
        i = bisect.bisect_left(numbers, frame_number)
        if i == len(numbers):
            return len(numbers) - 1
        if i > 0 and frame_number - numbers[i - 1] <= numbers[i] - frame_number:
            return i - 1
        return i

    @property
    def onset_index(self) -> int:
        """Index into ``frame_paths`` of the onset frame."""
        return self.index_of(self.onset)

    @property
    def apex_index(self) -> int | None:
        """Index into ``frame_paths`` of the apex frame; ``None`` when there is no apex."""
        return None if self.apex is None else self.index_of(self.apex)

    @property
    def offset_index(self) -> int:
        """Index into ``frame_paths`` of the offset frame."""
        return self.index_of(self.offset)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one sample of a copy. ``kind`` is one of ``missing-folder``,
    ``no-frames``, ``bad-marks`` (the sample is unusable: see :data:`MISSING_KINDS`),
    ``gap`` (frame numbers not contiguous), ``outside`` (onset/offset beyond the frames),
    ``unexpected`` (a folder the sheet or list does not name), ``name`` (a clip name that
    contradicts its folder)."""

    sample: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"sample": self.sample, "kind": self.kind, "detail": self.detail}


@dataclass
class DatasetCopy:
    """What a reader found under ``root``.

    ``samples``: the usable samples, in sheet (or folder) order. ``problems``: per sample,
    what is wrong on disk; :attr:`missing` lists the ids that could not be used. ``errata``:
    the official files' known defects met while reading, with what the reader did.
    ``rows``: sheet rows read (or clip folders found). ``notes``: facts a user must know
    (for example that SMIC has no apex).
    """

    dataset: str
    root: Path
    fps: float
    samples: list[Sample]
    problems: list[Problem] = field(default_factory=list)
    errata: list = field(default_factory=list)  # list[Erratum]
    rows: int = 0
    sheet: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Ids of the samples the sheet (or official list) names that cannot be used."""
        return [p.sample for p in self.problems if p.kind in MISSING_KINDS]

    @property
    def subjects(self) -> list[str]:
        """Subjects of the usable samples, in first-seen order."""
        return list(dict.fromkeys(s.subject for s in self.samples))

    def emotions(self) -> Counter[str]:
        """Sample count per emotion as the sheet writes it."""
        return Counter(s.emotion for s in self.samples)

    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}


def list_frames(folder: Path, pattern: re.Pattern[str] | None = None) -> dict[int, Path]:
    """Frame number -> path for the images in ``folder``, numbered by ``pattern``'s last
    group (default: the last number before the extension). Sorted by number, not by name:
    ``img10`` comes after ``img9``. When two files share a number (``img7.jpg`` and
    ``reg_img7.jpg``), the one whose name sorts last wins (the registered ``reg_`` frame)."""
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: (len(q.name), q.name)):
        m = (pattern or _TRAILING_NUMBER).search(p.name)
        if m is None or not p.is_file():
            continue
        found[int(m.groups()[-1])] = p
    return dict(sorted(found.items()))


def readme_fields(root: Path) -> dict[str, str]:
    """``key: value`` lines of ``root/README.txt`` (keys lower-cased), {} without one.

    ``edge-mer synth`` writes one in every layout: ``fps`` (the rate it rendered at) and
    ``synthetic: yes``. Real copies have no such file, or one without these keys."""
    readme = Path(root) / "README.txt"
    if not readme.is_file():
        return {}
    out = {}
    for line in readme.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out.setdefault(key.strip().lower(), value.strip())
    return out


def declared_fps(root: Path) -> float | None:
    """The fps ``root/README.txt`` declares (a line ``fps: 100``), else None; every reader
    lets it override the documented rate."""
    try:
        fps = float(readme_fields(root).get("fps", ""))
    except ValueError:
        return None
    return fps if fps > 0 else None


def is_synthetic(root: Path) -> bool:
    """True for a copy ``edge-mer synth`` wrote (README.txt says ``synthetic: yes``)."""
    return readme_fields(root).get("synthetic", "").lower() in ("yes", "true")


def frame_problems(
    sid: str, numbers: Iterable[int], onset: int, offset: int, folder: Path
) -> list[Problem]:
    """``gap`` and ``outside`` problems of one sample's frames (non-fatal: it stays usable)."""
    numbers = sorted(numbers)
    out = []
    if numbers:
        span = numbers[-1] - numbers[0] + 1
        if span != len(numbers):
            have = set(numbers)
            holes = [n for n in range(numbers[0], numbers[-1] + 1) if n not in have]
            shown = ", ".join(map(str, holes[:5])) + (" ..." if len(holes) > 5 else "")
            out.append(
                Problem(sid, "gap", f"{folder}: {len(holes)} frame number(s) missing ({shown})")
            )
        if onset < numbers[0] or offset > numbers[-1]:
            out.append(
                Problem(
                    sid,
                    "outside",
                    f"{folder}: onset..offset {onset}..{offset} is not within the frames "
                    f"{numbers[0]}..{numbers[-1]}",
                )
            )
    return out


def require_usable(copy: DatasetCopy, expected: str) -> DatasetCopy:
    """``copy`` itself, or :class:`DataError` when it names samples but none has its frames:
    then the folders do not match the sheet (a wrong root, or another release's layout).
    ``expected`` says where the first sample's frames were looked for."""
    if copy.rows and not copy.samples:
        first = copy.problems[0].detail if copy.problems else "no detail"
        raise DataError(
            f"the frame folders under {str(copy.root)!r} do not match the "
            f"{copy.dataset} annotations: none of {copy.rows} samples has its frames "
            f"(expected {expected}; first: {first})"
        )
    return copy
