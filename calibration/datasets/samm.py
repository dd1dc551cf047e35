"""SAMM: ``SAMM_Micro_FACS_Codes_v2.xlsx`` and one folder of gray frames per clip, 200 fps.

::

    ROOT/SAMM_Micro_FACS_Codes_v2.xlsx        (any SAMM*.xlsx|csv; also accepted in ROOT/SAMM/)
    ROOT/SAMM/006/006_1_2/006_05562.jpg ...    frame number zero-padded after the subject

The sheet has a preamble of about 13 rows above its header; columns, found by header name:
Subject ("006"), Filename ("006_1_2"), Inducement Code, Onset Frame, Apex Frame, Offset
Frame, Duration, Micro, Action Units, Estimated Emotion, Objective Classes, Notes. Subjects
stay text ("006"); one a spreadsheet stored as the number 6 becomes "006" (the folders'
name). The frame folders may also sit directly in ROOT (``ROOT/006/006_1_2/``) or under
another folder of ROOT that holds the subject folders. Known defects: see
:mod:`~edge_mer.calibration.datasets.errata` (028_4_1 and 032_3_1 have apexes outside
onset..offset).
"""

from __future__ import annotations

import re
from pathlib import Path

from edge_mer.calibration.datasets.coded import add_folder_clip
from edge_mer.calibration.datasets.schema import (
    DatasetCopy,
    Problem,
    declared_fps,
    list_frames,
    require_usable,
    sample_id,
)
from edge_mer.calibration.datasets.sheets import read_sheet
from edge_mer.errors import DataError

__all__ = ["SAMM_FPS", "find_sheet", "read_samm", "subject_id"]

SAMM_FPS = 200.0
NAME = "samm"
_SHEET_RE = re.compile(r"^samm.*\.(csv|xlsx)$", re.IGNORECASE)
_SUBJECT_DIR_RE = re.compile(r"^\d{3}$")
_FRAME_RE = re.compile(r"^\d+_(\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)
_REQUIRED = ("subject", "filename", "onset", "offset", "emotion")
_COLUMNS = ("Onset Frame", "Apex Frame", "Offset Frame")


def find_sheet(root: Path) -> Path | None:
    """The SAMM sheet in ``root`` or ``root/SAMM``: one whose name mentions FACS codes
    first, CSV before xlsx, then the last by name (the newest version)."""
    for folder in (root, root / "SAMM"):
        if not folder.is_dir():
            continue
        sheets = [p for p in folder.iterdir() if p.is_file() and _SHEET_RE.match(p.name)]
        if sheets:
            sheets.sort(
                key=lambda p: ("facs" in p.name.lower(), p.suffix.lower() == ".csv", p.name)
            )
            return sheets[-1]
    return None


def _frames_root(root: Path) -> Path:
    def has_subjects(d: Path) -> bool:
        return any(c.is_dir() and _SUBJECT_DIR_RE.match(c.name) for c in d.iterdir())

    for candidate in (root / "SAMM", root):
        if candidate.is_dir() and has_subjects(candidate):
            return candidate
    others = sorted(c for c in root.iterdir() if c.is_dir() and has_subjects(c))
    if not others:
        raise DataError(
            f"no SAMM frame folders under {str(root)!r}: expected SAMM/006/006_1_2/006_05562.jpg"
        )
    return others[0]


def subject_id(text: str) -> str:
    """ "006" stays "006"; "6" or the number 6 ("6.0") -> "006"."""
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        return value
    if not number.is_integer():
        return value
    return value if len(value) >= 3 and value.isdigit() else f"{int(number):03d}"


def read_samm(root: Path, *, fps: float | None = None) -> DatasetCopy:
    """Read the SAMM sheet under ``root`` and pair each row with its frame folder.

    Every sheet row becomes a sample or a problem. ``fps`` defaults to what
    ``root/README.txt`` declares, else 200. Raises :class:`DataError` when ``root`` has no
    SAMM sheet, no subject folders, or no row has its frames.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"SAMM root {str(root)!r} is not a folder")
    sheet_path = find_sheet(root)
    if sheet_path is None:
        raise DataError(
            f"no SAMM sheet in {str(root)!r}: expected SAMM_Micro_FACS_Codes_v2.xlsx (or a "
            "SAMM*.csv export) in ROOT or ROOT/SAMM"
        )
    if fps is None:
        fps = declared_fps(root) or SAMM_FPS
    frames_root = _frames_root(root)
    sheet = read_sheet(sheet_path, _REQUIRED)
    copy = DatasetCopy(NAME, root, float(fps), [], rows=len(sheet.records), sheet=sheet_path)
    for i, rec in enumerate(sheet.records):
        where = sheet.where(i)
        clip = rec["filename"].strip()
        subject = subject_id(rec["subject"]) if rec["subject"] else clip.split("_")[0]
        if not clip:
            row = f"{NAME}/{subject or '?'}/row{sheet.lines[i]}"
            copy.problems.append(Problem(row, "bad-marks", f"{where}: no Filename"))
            continue
        sid = sample_id(NAME, subject, clip)
        if clip.split("_")[0] != subject:
            copy.problems.append(
                Problem(sid, "name", f"{where}: Filename {clip!r} does not start with {subject!r}")
            )
        folder = frames_root / subject / clip
        if not folder.is_dir():
            copy.problems.append(Problem(sid, "missing-folder", f"{where}: no folder {folder}"))
            continue
        frames = list_frames(folder, _FRAME_RE)
        if not frames:
            copy.problems.append(
                Problem(sid, "no-frames", f"{where}: no {subject}_NNNNN.jpg in {folder}")
            )
            continue
        add_folder_clip(copy, sid, subject, clip, rec, where, _COLUMNS, frames, folder)
    return require_usable(copy, f"{frames_root}/<Subject>/<Filename>/<Subject>_NNNNN.jpg")
