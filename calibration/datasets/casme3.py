"""CAS(ME)^3 part A: ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` and one recording per task.

::

    ROOT/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx
    ROOT/ME_A/spNO.1/a/color/1.jpg ... N.jpg         (also ROOT/spNO.1/... directly)

Columns, found by header name: Subject ("spNO.1"), Filename ("a", the task recording),
Onset, Apex, Offset (frame numbers, often stored as text), AU, Objective class, emotion.
One recording holds several micro-expressions, so filenames repeat within a subject: a
sample's clip id is the filename when it is unique for its subject, else
``<filename>-<k>`` with k = 1, 2, ... in order of (onset, offset, sheet row), which does not
change when the sheet's rows are reordered. A sample's frames are the recording's frames
numbered onset..offset. The frame rate is taken as 30 fps (TPAMI 2022; not re-checked
against the files here).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from edge_mer.calibration.datasets.coded import coded_sample
from edge_mer.calibration.datasets.errata import check_marks
from edge_mer.calibration.datasets.schema import (
    DatasetCopy,
    Problem,
    declared_fps,
    frame_problems,
    list_frames,
    require_usable,
    sample_id,
)
from edge_mer.calibration.datasets.sheets import marks, read_sheet
from edge_mer.errors import DataError

__all__ = ["CASME3_FPS", "find_sheet", "read_casme3"]

CASME3_FPS = 30.0
NAME = "casme3"
_SHEET_RE = re.compile(r"^cas[\W_]*me[\W_]*3.*part[\W_]*a.*\.(csv|xlsx)$", re.IGNORECASE)
_REQUIRED = ("subject", "filename", "onset", "offset", "emotion")
_COLUMNS = ("Onset", "Apex", "Offset")


def find_sheet(root: Path) -> Path | None:
    """The part-A sheet in ``root`` (CSV before xlsx, then the last by name)."""
    sheets = [p for p in Path(root).iterdir() if p.is_file() and _SHEET_RE.match(p.name)]
    sheets.sort(key=lambda p: (p.suffix.lower() == ".csv", p.name))
    return sheets[-1] if sheets else None


def _frames_root(root: Path, subjects: set[str]) -> Path:
    candidates = [root / "ME_A", root, *sorted(root.glob("*/ME_A")), *sorted(root.iterdir())]
    best, hits = None, 0
    for c in candidates:
        if not c.is_dir():
            continue
        n = sum(1 for s in subjects if (c / s).is_dir())
        if n > hits:
            best, hits = c, n
    if best is None:
        raise DataError(
            f"no CAS(ME)^3 part A frame folders under {str(root)!r}: expected "
            "ME_A/spNO.1/a/color/1.jpg (subject folders named as the sheet's Subject column)"
        )
    return best


def read_casme3(root: Path, *, fps: float | None = None) -> DatasetCopy:
    """Read the part-A sheet under ``root`` and cut each row's frames from its recording.

    Every sheet row becomes a sample or a problem. ``fps`` defaults to ``root/README.txt``'s
    declaration, else 30.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CAS(ME)^3 root {str(root)!r} is not a folder")
    sheet_path = find_sheet(root)
    if sheet_path is None:
        raise DataError(
            f"no CAS(ME)^3 part A sheet in {str(root)!r}: expected "
            "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx (or a .csv export)"
        )
    if fps is None:
        fps = declared_fps(root) or CASME3_FPS
    sheet = read_sheet(sheet_path, _REQUIRED)
    copy = DatasetCopy(NAME, root, float(fps), [], rows=len(sheet.records), sheet=sheet_path)
    parsed = []
    for i, rec in enumerate(sheet.records):
        where = sheet.where(i)
        subject, filename = rec["subject"].strip(), rec["filename"].strip()
        if not subject or not filename:
            row = f"{NAME}/{subject or '?'}/row{sheet.lines[i]}"
            copy.problems.append(Problem(row, "bad-marks", f"{where}: no Subject or Filename"))
            continue
        try:
            parsed.append((i, subject, filename, marks(rec, where, _COLUMNS)))
        except DataError as e:
            copy.problems.append(Problem(f"{NAME}/{subject}/{filename}", "bad-marks", str(e)))
    clips = _clip_ids(parsed)
    frames_root = _frames_root(root, {p[1] for p in parsed})
    listings: dict[Path, dict[int, Path] | None] = {}
    for i, subject, filename, (onset, apex, offset, apex_text) in parsed:
        where = sheet.where(i)
        sid = sample_id(NAME, subject, clips[i])
        folder = frames_root / subject / filename / "color"
        if folder not in listings:
            listings[folder] = list_frames(folder) if folder.is_dir() else None
        frames = listings[folder]
        if frames is None:
            copy.problems.append(Problem(sid, "missing-folder", f"{where}: no folder {folder}"))
            continue
        apex, checked_offset, errata = check_marks(
            NAME, sid, onset, apex, offset, apex_text=apex_text, last_frame=None
        )
        copy.errata.extend(errata)
        if checked_offset is None:
            copy.problems.append(
                Problem(sid, "bad-marks", f"{where}: offset {offset} before onset {onset}")
            )
            continue
        inside = {n: p for n, p in frames.items() if onset <= n <= offset}
        if not inside:
            copy.problems.append(
                Problem(sid, "no-frames", f"{where}: no frames {onset}..{offset} in {folder}")
            )
            continue
        numbers = tuple(inside)
        copy.problems.extend(frame_problems(sid, numbers, onset, offset, folder))
        copy.samples.append(
            coded_sample(copy, subject, clips[i], onset, apex, offset, sheet.records[i], inside)
        )
    return require_usable(copy, f"{frames_root}/<Subject>/<Filename>/color/<N>.jpg")


def _clip_ids(parsed: list) -> dict[int, str]:
    """Row index -> clip id; repeated (subject, filename) pairs get ``-1``, ``-2``, ... in
    order of (onset, offset, row)."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for i, subject, filename, (onset, _apex, offset, _t) in parsed:
        groups[subject, filename].append((onset, offset, i))
    out = {}
    for (_subject, filename), rows in groups.items():
        if len(rows) == 1:
            out[rows[0][2]] = filename
            continue
        for k, (_on, _off, i) in enumerate(sorted(rows), start=1):
            out[i] = f"{filename}-{k}"
    return out
