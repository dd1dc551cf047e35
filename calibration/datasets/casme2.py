"""CASME II: a coding sheet plus one folder of numbered frames per clip, 200 fps.

::

    ROOT/CASME2-coding-20140508.xlsx   (or -20190701.xlsx, or any CASME2*coding*.csv|xlsx)
    ROOT/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg ... img86.jpg     raw release
    ROOT/Cropped/sub01/EP02_01f/reg_img46.jpg ...                       cropped release

The frame folders may also sit directly in ROOT (``ROOT/sub01/...``); the cropped release
is preferred when both are there, since edge-mer's models read face crops. Sheet columns,
found by header name: Subject ("01"), Filename ("EP02_01f"), OnsetFrame, ApexFrame,
OffsetFrame, Action Units, Estimated Emotion. Spacer "Unnamed" columns are dropped, an apex
given as "/" becomes ``None`` (an erratum), and a subject a spreadsheet stored as the
number 1 becomes "01" (CASME II's folders are ``sub01``). Frame numbers are the numbers in
the file names (``img46`` is frame 46) and equal the sheet's.

A ``README.txt`` beside the sheet declaring ``fps: N`` (as ``edge-mer synth`` writes for
trees at other rates) overrides the 200 fps.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from edge_mer.calibration.datasets.coded import add_folder_clip
from edge_mer.calibration.datasets.schema import (
    DatasetCopy,
    Problem,
    Sample,
    declared_fps,
    list_frames,
    require_usable,
    sample_id,
)
from edge_mer.calibration.datasets.sheets import read_sheet
from edge_mer.errors import DataError

__all__ = [
    "CASME2_FPS",
    "declared_fps",
    "find_sheet",
    "is_casme2_root",
    "load_casme2",
    "read_casme2",
]

log = logging.getLogger(__name__)

CASME2_FPS = 200.0
NAME = "casme2"
_SHEET_RE = re.compile(r"^casme2.*coding.*\.(csv|xlsx)$", re.IGNORECASE)
_FRAME_RE = re.compile(r"^(?:reg_)?img(\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
_SUBJECT_DIR_RE = re.compile(r"^sub\d+$", re.IGNORECASE)
_REQUIRED = ("subject", "filename", "onset", "offset", "emotion")
_COLUMNS = ("OnsetFrame", "ApexFrame", "OffsetFrame")


def find_sheet(root: Path) -> Path | None:
    """The coding sheet in ``root``: CSV before xlsx (no extra dependency), then the newest
    dated version by name."""
    sheets = [p for p in Path(root).iterdir() if p.is_file() and _SHEET_RE.match(p.name)]
    if not sheets:
        return None
    sheets.sort(key=lambda p: (p.suffix.lower() == ".csv", p.name))
    return sheets[-1]


def is_casme2_root(path: Path) -> bool:
    """True when ``path`` is a folder holding a ``CASME2*coding*.csv``/``.xlsx`` sheet."""
    path = Path(path)
    return path.is_dir() and find_sheet(path) is not None


def _frames_root(root: Path) -> Path:
    def has_subjects(d: Path) -> bool:
        return any(c.is_dir() and _SUBJECT_DIR_RE.match(c.name) for c in d.iterdir())

    if has_subjects(root):
        return root
    candidates = sorted(c for c in root.iterdir() if c.is_dir() and has_subjects(c))
    if not candidates:
        raise DataError(
            f"no CASME II frame folders under {str(root)!r}: expected sub01/EP02_01f/img46.jpg "
            "in ROOT, ROOT/CASME2_RAW_selected/ or ROOT/Cropped/"
        )
    candidates.sort(key=lambda c: "crop" not in c.name.lower())
    log.info("CASME II frames under %s", candidates[0])
    return candidates[0]


def subject_id(text: str) -> str:
    """ "1", "01", "sub01", "1.0" -> "01"; anything else is kept as written."""
    value = text.strip()
    if value.lower().startswith("sub"):
        value = value[3:]
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{int(number):02d}" if number.is_integer() else value


def read_casme2(root: Path, *, fps: float | None = None) -> DatasetCopy:
    """Read the coding sheet under ``root`` and pair each row with its frame folder.

    Every sheet row becomes a sample or a problem (``missing-folder``, ``no-frames``,
    ``bad-marks``). ``fps`` defaults to what ``root/README.txt`` declares, else 200.
    Raises :class:`DataError` when ``root`` has no sheet or no frame folders at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CASME II root {str(root)!r} is not a folder")
    sheet_path = find_sheet(root)
    if sheet_path is None:
        raise DataError(
            f"no CASME II coding sheet in {str(root)!r}: expected CASME2-coding-20140508.xlsx "
            "(or CASME2*coding*.csv) beside the frame folders"
        )
    if fps is None:
        fps = declared_fps(root) or CASME2_FPS
    frames_root = _frames_root(root)
    sheet = read_sheet(sheet_path, _REQUIRED)
    copy = DatasetCopy(NAME, root, float(fps), [], rows=len(sheet.records), sheet=sheet_path)
    for i, rec in enumerate(sheet.records):
        where = sheet.where(i)
        if not rec["subject"] or not rec["filename"]:
            row = f"{NAME}/?/row{sheet.lines[i]}"
            copy.problems.append(Problem(row, "bad-marks", f"{where}: no Subject or Filename"))
            continue
        subject, clip = subject_id(rec["subject"]), rec["filename"].strip()
        sid = sample_id(NAME, subject, clip)
        folder = frames_root / f"sub{subject}" / clip
        if not folder.is_dir():
            copy.problems.append(Problem(sid, "missing-folder", f"{where}: no folder {folder}"))
            continue
        frames = list_frames(folder, _FRAME_RE)
        if not frames:
            copy.problems.append(Problem(sid, "no-frames", f"{where}: no img<N>.jpg in {folder}"))
            continue
        add_folder_clip(copy, sid, subject, clip, rec, where, _COLUMNS, frames, folder)
    return require_usable(copy, f"{frames_root}/sub<Subject>/<Filename>/img<N>.jpg")


def load_casme2(root: Path, *, fps: float | None = None) -> list[Sample]:
    """The usable samples of :func:`read_casme2`; each problem is logged as a warning."""
    copy = read_casme2(root, fps=fps)
    for p in copy.problems:
        log.warning("%s: %s (%s)", p.sample, p.detail, p.kind)
    return copy.samples
