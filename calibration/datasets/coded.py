"""Samples from coding-sheet rows: what the CASME II, SAMM and CAS(ME)^3 readers share.

A row's marks (onset, apex, offset) become a :class:`Sample` with the row's emotion, action
units and objective class; for datasets with one frame folder per clip (CASME II, SAMM)
:func:`add_folder_clip` also applies the errata table and records the frames' problems.
"""

from __future__ import annotations

from pathlib import Path

from edge_mer.calibration.datasets.errata import check_marks
from edge_mer.calibration.datasets.schema import DatasetCopy, Problem, Sample, frame_problems
from edge_mer.calibration.datasets.sheets import marks
from edge_mer.errors import DataError


def coded_sample(
    copy: DatasetCopy,
    subject: str,
    clip: str,
    onset: int,
    apex: int | None,
    offset: int,
    record: dict[str, str],
    frames: dict[int, Path],
) -> Sample:
    """The sample of one sheet ``record`` of ``copy``'s dataset; ``frames`` maps frame
    numbers (ascending) to files."""
    return Sample(
        dataset=copy.dataset,
        subject=subject,
        clip=clip,
        onset=onset,
        apex=apex,
        offset=offset,
        fps=float(copy.fps),
        emotion=record["emotion"].strip(),
        frame_paths=tuple(frames.values()),
        frame_numbers=tuple(frames),
        action_units=record.get("action_units", "").strip(),
        objective_class=record.get("objective_class", "").strip(),
    )


def add_folder_clip(
    copy: DatasetCopy,
    sid: str,
    subject: str,
    clip: str,
    record: dict[str, str],
    where: str,
    columns: tuple[str, str, str],
    frames: dict[int, Path],
    folder: Path,
) -> None:
    """Add the clip of ``record`` whose own ``folder`` holds ``frames`` (non-empty) to
    ``copy``: its marks checked against the errata table (a missing apex, an offset past
    the last frame), frame gaps and marks outside the frames recorded as problems; bad
    marks make it a ``bad-marks`` problem instead of a sample."""
    try:
        onset, apex, offset, apex_text = marks(record, where, columns)
    except DataError as e:
        copy.problems.append(Problem(sid, "bad-marks", str(e)))
        return
    numbers = tuple(frames)
    apex, new_offset, errata = check_marks(
        copy.dataset, sid, onset, apex, offset, apex_text=apex_text, last_frame=numbers[-1]
    )
    copy.errata.extend(errata)
    assert new_offset is not None  # one folder per clip: an offset is always found
    copy.problems.extend(frame_problems(sid, numbers, onset, new_offset, folder))
    copy.samples.append(coded_sample(copy, subject, clip, onset, apex, new_offset, record, frames))
