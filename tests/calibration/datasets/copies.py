"""Fake copies of the datasets, laid out as distributed, with the documented counts.

The real datasets are licence-gated, so these reproduce what mer-domain.md §3-4 documents:
the layouts, the sheets' columns and quirks (SAMM's preamble, CASME II's spacer "Unnamed"
columns and "/" apex, ids that must stay text, CAS(ME)^3's frame numbers stored as text and
repeated filenames) and the sheets' emotion counts. Every sample of the official MEGC 2019
list is in the copies, with an emotion consistent with its official label; the rows the
list leaves out (CASME II fear, sadness, two disgust clips, others; SAMM "Other") are
invented names. Frame files are empty: the readers only list them.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from edge_mer.calibration.datasets.megc2019 import official_list

CASME2_HEADER = [
    "Subject",
    "Filename",
    "Unnamed: 2",
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    "Unnamed: 6",
    "Action Units",
    "Estimated Emotion",
]
SAMM_HEADER = [
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
]
CASME3_HEADER = [
    "Subject",
    "Filename",
    "Onset",
    "Apex",
    "Offset",
    "AU",
    "Objective class",
    "emotion",
]
SAMM_PREAMBLE = [
    ["SAMM Micro-Movement Database"],
    ["FACS coding of the micro-movements"],
    *([[""]] * 3),
    ["Frames are numbered from the start of each recording"],
    *([[""]] * 6),
]  # 12 rows, then the header on row 13


def touch_frames(folder: Path, names: Sequence[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def write_sheet(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    """``rows`` (preamble, header, data) as .xlsx (openpyxl, cell types kept) or .csv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        for row in rows:
            sheet.append(list(row))
        book.save(path)
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    return path


def _spread(counts: dict[str, int]) -> list[str]:
    return [e for e, n in counts.items() for _ in range(n)]


def casme2_rows() -> list[tuple[str, str, str]]:
    """(subject "01", clip, emotion) of the 255 rows of CASME2-coding-20140508: the 145
    composite samples (negatives split disgust 61 / repression 27) plus sub04/EP12_01f and
    sub05/EP09_05f (disgust), 7 sadness, 2 fear and 99 others."""
    entries = [e for e in official_list() if e.dataset == "casme2"]
    negatives = iter(_spread({"disgust": 61, "repression": 27}))
    emotion = {"positive": "happiness", "surprise": "surprise"}
    rows = [(e.subject, e.clip, emotion.get(e.label) or next(negatives)) for e in entries]
    rows += [("04", "EP12_01f", "disgust"), ("05", "EP09_05f", "disgust")]
    extra = _spread({"sadness": 7, "fear": 2, "others": 99})
    subjects = [f"{i:02d}" for i in range(1, 27)]
    for k, e in enumerate(extra):
        rows.append((subjects[k % 26], f"EP90_{k:03d}", e))
    return rows


def write_casme2(root: Path, *, suffix: str = ".xlsx", rows=None) -> Path:
    """A CASME II copy: raw release one level down, sheet with spacer columns; subject
    cells as numbers (as the 2014 xlsx stores them) in .xlsx, as "01" text in .csv."""
    data = [CASME2_HEADER]
    for subject, clip, emotion in rows or casme2_rows():
        apex: object = "/" if (subject, clip) == ("04", "EP12_01f") else 11
        subj: object = int(subject) if suffix == ".xlsx" else subject
        data.append([subj, clip, None, 10, apex, 12, None, "AU4", emotion])
        touch_frames(
            root / "CASME2_RAW_selected" / f"sub{subject}" / clip,
            [f"img{n}.jpg" for n in range(10, 13)],
        )
    write_sheet(root / f"CASME2-coding-20140508{suffix}", data)
    return root


def samm_rows() -> list[tuple[str, str, str]]:
    """(subject "006", clip, emotion) of the 159 rows: the 133 composite samples
    (negatives: Anger 57, Contempt 12, Disgust 9, Fear 8, Sadness 6) plus 26 "Other",
    some of them of a 29th subject (038) the composite does not have."""
    entries = [e for e in official_list() if e.dataset == "samm"]
    negatives = iter(_spread({"Anger": 57, "Contempt": 12, "Disgust": 9, "Fear": 8, "Sadness": 6}))
    emotion = {"positive": "Happiness", "surprise": "Surprise"}
    rows = [(e.subject, e.clip, emotion.get(e.label) or next(negatives)) for e in entries]
    subjects = [*sorted({e.subject for e in entries}), "038"]
    for k in range(26):
        subject = subjects[-1] if k < 3 else subjects[k % 28]
        rows.append((subject, f"{subject}_9_{k + 1}", "Other"))
    return rows


SAMM_BAD_APEX = {"028_4_1": (100, 90, 102), "032_3_1": (100, 95, 102)}  # onset, apex, offset


def write_samm(root: Path, *, suffix: str = ".xlsx", rows=None) -> Path:
    """A SAMM copy: ROOT/SAMM_Micro_FACS_Codes_v2.xlsx with its preamble, frames in
    ROOT/SAMM/006/006_1_2/006_00100.jpg. The first row's subject is stored as the number 6."""
    data: list[list[object]] = [*SAMM_PREAMBLE, SAMM_HEADER]
    for k, (subject, clip, emotion) in enumerate(rows or samm_rows()):
        onset, apex, offset = SAMM_BAD_APEX.get(clip, (100, 101, 102))
        subj: object = int(subject) if (k == 0 and suffix == ".xlsx") else subject
        data.append([subj, clip, "1", onset, apex, offset, 21, "1", "V", "", "R12", emotion])
        touch_frames(
            root / "SAMM" / subject / clip,
            [f"{subject}_{n:05d}.jpg" for n in range(onset, offset + 1, 1)],
        )
    write_sheet(root / f"SAMM_Micro_FACS_Codes_v2{suffix}", data)
    return root


def write_smic(root: Path, variant: str = "HS", clips=None) -> Path:
    """SMIC micro set folders: the 164 clips of the MEGC list (HS) or ``clips``
    ((subject "s1", label, clip) triples) for VIS/NIR; frames image<N>.jpg."""
    if clips is None:
        clips = [(e.subject, e.label, e.clip) for e in official_list() if e.dataset == "smic-hs"]
    for k, (subject, label, clip) in enumerate(clips):
        start = 1000 * k + 17
        touch_frames(
            root / variant / subject / "micro" / label / clip,
            [f"image{n:06d}.jpg" for n in range(start, start + 3)],
        )
    return root


CASME3_EMOTIONS = {
    "disgust": 250,
    "surprise": 187,
    "others": 161,
    "fear": 86,
    "anger": 64,
    "sad": 57,
    "happy": 55,
}


def casme3_rows() -> list[tuple[str, str, int, int, int, str]]:
    """860 rows over 94 subjects (spNO.1 ...), filenames a-d repeating within a subject."""
    rows = []
    for k, e in enumerate(_spread(CASME3_EMOTIONS)):
        subject = f"spNO.{k % 94 + 1}"
        filename = "abcd"[(k // 94) % 4]
        onset = 10 + 3 * (k // 376)  # recordings hold frames 10-11, 13-14, 16-17
        rows.append((subject, filename, onset, onset, onset + 1, e))
    return rows


def write_casme3(root: Path, *, suffix: str = ".xlsx", rows=None) -> Path:
    """CAS(ME)^3 part A: frame numbers written as text, recordings ME_A/<subj>/<file>/color/."""
    data: list[list[object]] = [CASME3_HEADER]
    spans: dict[Path, set[int]] = {}
    for subject, filename, onset, apex, offset, emotion in rows or casme3_rows():
        data.append([subject, filename, str(onset), str(apex), str(offset), "AU4", "1", emotion])
        spans.setdefault(root / "ME_A" / subject / filename / "color", set()).update(
            range(onset, offset + 1)
        )
    for folder, numbers in spans.items():
        touch_frames(folder, [f"{n}.jpg" for n in sorted(numbers)])
    write_sheet(root / f"cas(me)3_part_A_ME_label_JpgIndex_v2{suffix}", data)
    return root


def emotion_counts(rows) -> Counter:
    return Counter(r[-1] for r in rows)
