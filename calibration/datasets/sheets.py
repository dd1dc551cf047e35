"""Annotation sheets (.xlsx through openpyxl, or .csv) read by header name, every cell as text.

The datasets' sheets differ by release: a preamble above the header (SAMM), blank or
"Unnamed" spacer columns (CASME II 2019), several spellings of one column ("OnsetFrame",
"Onset Frame", "Onset"), ids that a spreadsheet stores as numbers. This module turns any of
them into one dict per data row whose keys are *fields* (``subject``, ``filename``,
``onset``, ``apex``, ``offset``, ``action_units``, ``emotion``, ``objective_class``) and
whose values are the cells' text: openpyxl cell values or CSV strings, never parsed by
pandas, so "01" and "006" stay as written. A whole number that a spreadsheet stored as a
number comes back as its digits ("6", not "6.0"); the readers pad ids where the dataset does.
"""

from __future__ import annotations

import csv
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_mer.errors import DataError, MissingDependencyError

__all__ = ["FIELDS", "Sheet", "frame_number", "marks", "norm_header", "read_sheet"]

# Normalised header (lower case, no spaces/underscores/dashes) -> field.
FIELDS = {
    "subject": "subject",
    "sub": "subject",
    "filename": "filename",
    "onsetframe": "onset",
    "onset": "onset",
    "onsetf": "onset",
    "apexframe": "apex",
    "apex": "apex",
    "apexf1": "apex",
    "offsetframe": "offset",
    "offset": "offset",
    "offsetf": "offset",
    "actionunits": "action_units",
    "au": "action_units",
    "aus": "action_units",
    "estimatedemotion": "emotion",
    "emotion": "emotion",
    "objectiveclass": "objective_class",
    "objectiveclasses": "objective_class",
}
HEADER_SEARCH_ROWS = 30
NO_APEX = frozenset({"", "/", "-", "?", "none", "n/a", "na"})


def norm_header(name: object) -> str:
    """ "Onset Frame", "onset_frame", "OnsetFrame" -> "onsetframe"."""
    return re.sub(r"[\s_\-]+", "", str(name or "")).lower()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value).strip()


def _read_rows(path: Path) -> list[list[str]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                return [[c.strip() for c in row] for row in csv.reader(f)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read sheet {str(path)!r}: {e}") from None
    if suffix in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError:
            raise MissingDependencyError(
                "openpyxl", "datasets", f"reading the .xlsx sheet {str(path)!r}"
            ) from None
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises zipfile, KeyError, InvalidFileException...
            raise DataError(
                f"cannot read sheet {str(path)!r}: {e}; save it again as .xlsx or .csv"
            ) from None
        try:
            for sheet in book.worksheets:
                rows = [[_cell(c) for c in row] for row in sheet.iter_rows(values_only=True)]
                if _header_row(rows) is not None:
                    return rows
            return [
                [_cell(c) for c in row] for row in book.worksheets[0].iter_rows(values_only=True)
            ]
        finally:
            book.close()
    raise DataError(
        f"sheet {str(path)!r} is not a .csv or .xlsx file: open it in a spreadsheet and "
        "save it as .xlsx (or export .csv)"
    )


def _header_row(rows: Sequence[Sequence[str]]) -> int | None:
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if {"subject", "filename"} <= {FIELDS.get(norm_header(c)) for c in row}:
            return i
    return None


@dataclass
class Sheet:
    """A parsed sheet: ``records`` are field -> text, ``line`` the 1-based row of each
    record in the file (for messages), ``columns`` the header cells as written."""

    path: Path
    columns: list[str]
    records: list[dict[str, str]]
    lines: list[int]

    def where(self, i: int) -> str:
        return f"{self.path.name} row {self.lines[i]}"


def read_sheet(path: Path, required: Sequence[str]) -> Sheet:
    """Read ``path``; the header is the first row (of the first 30) naming both a subject
    and a filename column, so a preamble above it is skipped. In an .xlsx, the first
    worksheet that has such a header is read. Spacer columns (blank or "Unnamed") and blank
    rows are dropped; when two columns map to one field the first wins.

    Raises :class:`DataError` naming the required fields that no column provides, with the
    columns found.
    """
    path = Path(path)
    rows = _read_rows(path)
    header = _header_row(rows)
    if header is None:
        found = [c for row in rows[:HEADER_SEARCH_ROWS] for c in row if c][:12]
        raise DataError(
            f"sheet {str(path)!r} has no header row naming 'Subject' and 'Filename' in its "
            f"first {HEADER_SEARCH_ROWS} rows (cells seen: {found!r}); it is not this "
            "dataset's annotation sheet"
        )
    names = rows[header]
    keep: list[tuple[int, str]] = []
    taken: set[str] = set()
    for i, name in enumerate(names):
        key = norm_header(name)
        if not key or key.startswith("unnamed"):
            continue
        field = FIELDS.get(key)
        if field is not None and field not in taken:
            keep.append((i, field))
            taken.add(field)
    lacking = [f for f in required if f not in taken]
    if lacking:
        columns = [c for c in names if c and not norm_header(c).startswith("unnamed")]
        raise DataError(
            f"sheet {str(path)!r} lacks the column(s) {lacking!r} (columns found: {columns!r}); "
            "use the dataset's own sheet or rename the header cells"
        )
    records, lines = [], []
    for n, row in enumerate(rows[header + 1 :], start=header + 2):
        record = {f: (row[i].strip() if i < len(row) else "") for i, f in keep}
        if any(record.values()):
            records.append(record)
            lines.append(n)
    return Sheet(path, [c for c in names if c], records, lines)


def frame_number(value: str, column: str, where: str) -> int:
    """A frame number cell ("46", "46.0", " 46 ") as int; :class:`DataError` otherwise."""
    try:
        number = float(value)
    except ValueError:
        raise DataError(
            f"{where}: {column} {value!r} is not a frame number; fix the cell in the sheet"
        ) from None
    if not number.is_integer() or number < 0:
        raise DataError(f"{where}: {column} {value!r} is not a whole frame number")
    return int(number)


def marks(
    record: dict[str, str], where: str, columns: tuple[str, str, str]
) -> tuple[int, int | None, int, str]:
    """(onset, apex or None, offset, the apex cell as written) of a record; ``columns`` are
    the sheet's names for the three, used in messages. A blank, "/" or "-" apex is None
    (the caller records the erratum); a bad onset or offset raises :class:`DataError`."""
    onset = frame_number(record["onset"], columns[0], where)
    offset = frame_number(record["offset"], columns[2], where)
    apex_text = record.get("apex", "")
    apex = (
        None if apex_text.strip().lower() in NO_APEX else frame_number(apex_text, columns[1], where)
    )
    return onset, apex, offset, apex_text
