"""The CASME II layout: a coding sheet plus one folder of numbered frames per clip.

::

    ROOT/CASME2-coding-20140508.csv  (or .xlsx)
    ROOT/sub01/EP02_01f/img46.jpg ... img86.jpg         raw release
    ROOT/sub01/EP02_01f/reg_img46.jpg ...               cropped release

The frame folders may also sit one level down (``ROOT/CASME2_RAW_selected/sub01/...`` or
``ROOT/Cropped/sub01/...``); the cropped release is preferred when both are there, since
edge-mer's models read face crops. The sheet is parsed by header name (case, spaces and
underscores ignored); blank "Unnamed" spacer columns are dropped, an apex given as "/"
becomes ``None`` and subjects are zero-padded to two digits ("1" -> "01").
"""

from __future__ import annotations

import bisect
import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from edge_mer.errors import DataError, MissingDependencyError

__all__ = ["CodedClip", "is_casme2_root", "load_casme2", "read_coding_sheet"]

log = logging.getLogger(__name__)

CASME2_FPS = 200.0
_SHEET_RE = re.compile(r"^casme2.*coding.*\.(csv|xlsx)$", re.IGNORECASE)
_FRAME_RE = re.compile(r"^(reg_)?img(\d+)\.(jpe?g|png|bmp)$", re.IGNORECASE)
_SUBJECT_DIR_RE = re.compile(r"^sub\d+$", re.IGNORECASE)
# Normalised header -> field; several spellings appear across sheet versions.
_COLUMNS = {
    "subject": "subject",
    "filename": "filename",
    "onsetframe": "onset",
    "onset": "onset",
    "apexframe": "apex",
    "apex": "apex",
    "offsetframe": "offset",
    "offset": "offset",
    "actionunits": "action_units",
    "au": "action_units",
    "aus": "action_units",
    "estimatedemotion": "emotion",
    "emotion": "emotion",
}
_REQUIRED = ("subject", "filename", "onset", "offset", "emotion")
_HEADER_SEARCH_ROWS = 20


@dataclass(frozen=True)
class CodedClip:
    """One coded CASME II sample. Frame numbers are the sheet's; ``frames`` are sorted by them."""

    subject: str
    filename: str
    onset: int
    apex: int | None
    offset: int
    emotion: str
    action_units: str
    frames: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    fps: float

    def index_of(self, frame_number: int) -> int:
        """Index into ``frames`` of ``frame_number``, or of the nearest frame present."""
        numbers = self.frame_numbers
        i = bisect.bisect_left(numbers, frame_number)
        if i == len(numbers):
            return len(numbers) - 1
        if i > 0 and frame_number - numbers[i - 1] <= numbers[i] - frame_number:
            return i - 1
        return i

    @property
    def onset_index(self) -> int:
        """Index into ``frames`` of the onset frame."""
        return self.index_of(self.onset)

    @property
    def apex_index(self) -> int | None:
        """Index into ``frames`` of the apex frame; ``None`` when the sheet has no apex."""
        return None if self.apex is None else self.index_of(self.apex)

    @property
    def offset_index(self) -> int:
        """Index into ``frames`` of the offset frame."""
        return self.index_of(self.offset)


def _norm_header(name: object) -> str:
    return re.sub(r"[\s_\-]+", "", str(name or "")).lower()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _read_rows(path: Path) -> list[list[str]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                return [[c.strip() for c in row] for row in csv.reader(f)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read coding sheet {str(path)!r}: {e}") from None
    if suffix == ".xlsx":
        try:
            import openpyxl
        except ImportError:
            raise MissingDependencyError(
                "openpyxl", "convert", "reading .xlsx coding sheets"
            ) from None
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises zipfile, KeyError, InvalidFileException...
            raise DataError(
                f"cannot read coding sheet {str(path)!r}: {e}; save it again as .xlsx or .csv"
            ) from None
        try:
            sheet = book.worksheets[0]
            return [[_cell(c) for c in row] for row in sheet.iter_rows(values_only=True)]
        finally:
            book.close()
    raise DataError(f"coding sheet {str(path)!r} is not a .csv or .xlsx file: export it as one")


def read_coding_sheet(path: Path) -> list[dict[str, str]]:
    """Read a coding sheet (.csv, or .xlsx with openpyxl) into one dict per data row.

    Keys are the normalised header names (lower case, no spaces or underscores, e.g.
    ``"onsetframe"``, ``"estimatedemotion"``); values are stripped strings. The header is the
    first row (within the first 20) that names both Subject and Filename, so a preamble is
    skipped. Blank and "Unnamed" spacer columns and blank rows are dropped.
    """
    path = Path(path)
    rows = _read_rows(path)
    header = next(
        (
            i
            for i, row in enumerate(rows[:_HEADER_SEARCH_ROWS])
            if {"subject", "filename"} <= {_norm_header(c) for c in row}
        ),
        None,
    )
    if header is None:
        raise DataError(
            f"coding sheet {str(path)!r} has no header row with 'Subject' and 'Filename' "
            f"in its first {_HEADER_SEARCH_ROWS} rows: add the CASME II header"
        )
    names = [_norm_header(c) for c in rows[header]]
    keep = [(i, n) for i, n in enumerate(names) if n and not n.startswith("unnamed")]
    out = []
    for row in rows[header + 1 :]:
        record = {n: (row[i].strip() if i < len(row) else "") for i, n in keep}
        if any(record.values()):
            out.append(record)
    return out


def _fields(record: dict[str, str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in record.items():
        field = _COLUMNS.get(key)
        if field is not None and field not in fields:
            fields[field] = value
    return fields


def _subject(value: str) -> str:
    text = value.strip()
    if text.lower().startswith("sub"):
        text = text[3:]
    try:
        return f"{int(float(text)):02d}"
    except ValueError:
        return text


def _frame_number(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataError(
            f"{where}: {column} {value!r} is not a frame number; fix the cell in the sheet"
        ) from None
    if not number.is_integer():
        raise DataError(f"{where}: {column} {value!r} is not a whole frame number")
    return int(number)


def _apex(value: str, where: str) -> int | None:
    if value.strip() in ("", "/", "-", "?"):
        return None
    return _frame_number(value, "ApexFrame", where)


def _find_sheet(root: Path) -> Path | None:
    sheets = [p for p in root.iterdir() if p.is_file() and _SHEET_RE.match(p.name)]
    if not sheets:
        return None
    # CSV first (no extra dependency), then the newest dated version by name.
    sheets.sort(key=lambda p: (p.suffix.lower() == ".csv", p.name))
    return sheets[-1]


def _frames_root(root: Path) -> Path:
    def has_subjects(d: Path) -> bool:
        return any(c.is_dir() and _SUBJECT_DIR_RE.match(c.name) for c in d.iterdir())

    if has_subjects(root):
        return root
    candidates = sorted(c for c in root.iterdir() if c.is_dir() and has_subjects(c))
    if not candidates:
        return root
    candidates.sort(key=lambda c: "crop" not in c.name.lower())
    log.info("CASME II frames under %s", candidates[0])
    return candidates[0]


def _list_frames(folder: Path) -> tuple[tuple[Path, ...], tuple[int, ...]]:
    by_number: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FRAME_RE.match(p.name)
        if m is None:
            continue
        number = int(m.group(2))
        # Both raw and registered frames in one folder: keep the registered (cropped) one.
        if number not in by_number or m.group(1):
            by_number[number] = p
    numbers = tuple(sorted(by_number))
    return tuple(by_number[n] for n in numbers), numbers


def is_casme2_root(path: Path) -> bool:
    """True when ``path`` is a folder holding a ``CASME2-coding*.csv``/``.xlsx`` sheet."""
    path = Path(path)
    return path.is_dir() and _find_sheet(path) is not None


def declared_fps(root: Path) -> float | None:
    """The fps a ``README.txt`` beside the sheet declares (``fps: 100``), as
    ``edge-mer synth`` writes it for trees at other rates than CASME II's 200."""
    readme = Path(root) / "README.txt"
    if not readme.is_file():
        return None
    for line in readme.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "fps":
            try:
                fps = float(value)
            except ValueError:
                return None
            return fps if fps > 0 else None
    return None


def load_casme2(root: Path, *, fps: float | None = None) -> list[CodedClip]:
    """Read the coding sheet under ``root`` and pair each row with its frame folder.

    ``fps`` defaults to what ``root/README.txt`` declares, else CASME II's 200. Rows whose
    folder is missing or holds no ``img<N>``/``reg_img<N>`` frames are logged and skipped.
    Raises :class:`DataError` when there is no sheet or no usable clip.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CASME II root {str(root)!r} is not a folder")
    if fps is None:
        fps = declared_fps(root) or CASME2_FPS
    sheet = _find_sheet(root)
    if sheet is None:
        raise DataError(
            f"no CASME II coding sheet in {str(root)!r}: expected CASME2-coding*.csv or .xlsx"
        )
    frames_root = _frames_root(root)
    records = read_coding_sheet(sheet)
    clips: list[CodedClip] = []
    missing_cols: list[str] | None = None
    for row_number, record in enumerate(records, start=1):
        fields = _fields(record)
        if missing_cols is None:
            missing_cols = [c for c in _REQUIRED if c not in fields]
            if missing_cols:
                raise DataError(
                    f"coding sheet {str(sheet)!r} lacks column(s) {missing_cols!r} "
                    f"(found {sorted(record)!r}): use the CASME II header names"
                )
        where = f"{sheet.name} data row {row_number}"
        if not fields["subject"] or not fields["filename"]:
            log.warning("%s: no Subject or Filename, skipped", where)
            continue
        subject = _subject(fields["subject"])
        filename = fields["filename"].strip()
        folder = frames_root / f"sub{subject}" / filename
        if not folder.is_dir():
            log.warning("%s: frame folder %s does not exist, skipped", where, folder)
            continue
        frames, numbers = _list_frames(folder)
        if not frames:
            log.warning("%s: no img<N>.jpg frames in %s, skipped", where, folder)
            continue
        onset = _frame_number(fields["onset"], "OnsetFrame", where)
        offset = _frame_number(fields["offset"], "OffsetFrame", where)
        apex = _apex(fields.get("apex", ""), where)
        if offset < onset:
            # Known erratum in some sheet versions (an offset of 0); the clip ends with its frames.
            log.warning(
                "%s: OffsetFrame %d before OnsetFrame %d, using the last frame %d",
                where,
                offset,
                onset,
                numbers[-1],
            )
            offset = numbers[-1]
        clips.append(
            CodedClip(
                subject=subject,
                filename=filename,
                onset=onset,
                apex=apex,
                offset=offset,
                emotion=fields["emotion"].strip().lower(),
                action_units=fields.get("action_units", "").strip(),
                frames=frames,
                frame_numbers=numbers,
                fps=float(fps),
            )
        )
    if not clips:
        raise DataError(
            f"no usable CASME II clips under {str(root)!r}: {sheet.name} lists "
            f"{len(records)} rows but none has a frame folder sub<Subject>/<Filename>/ with "
            "img<N>.jpg frames"
        )
    return clips
