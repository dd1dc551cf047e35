"""Known defects of the datasets' official files, with their sources and what the readers do.

Two kinds of entry:

- :data:`KNOWN`: defects of named samples, recorded by the field (a source for each).
- The rules of :func:`check_marks`, applied to every sheet row: a blank or "/" apex, an
  apex outside onset..offset, an offset before the onset. A row that breaks a rule is
  handled the same way whether or not it is in :data:`KNOWN`, and reported with the known
  entry's source when there is one (``detected`` otherwise).

What the readers do, in one place: an unusable apex becomes ``None`` (consumers that need
one take the onset-offset midpoint and say so; nothing invents an apex silently); an offset
before the onset is replaced by the last frame of the clip's folder when the dataset has one
folder per clip (CASME II, SAMM), and makes the sample unusable otherwise (CAS(ME)^3, whose
clips are ranges of a long recording).

meb (tvaranka/meb, ``meb/datasets/datasets.py``) patches further rows of CASME II, SAMM and
CAS(ME)^3 by DataFrame row index (estimated apexes, corrected offsets and onsets). Its row
indices cannot be mapped to sample ids without the licence-gated sheets, so they are not in
:data:`KNOWN`; the rules above catch the same classes of defect by value.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOWN", "Erratum", "check_marks", "known_for"]


@dataclass(frozen=True)
class Erratum:
    """One defect met in a dataset's files: the sample, what is wrong, what the reader did,
    and where the defect is documented (``detected``: found by the rules while reading)."""

    dataset: str
    sample: str
    issue: str
    action: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {
            "dataset": self.dataset,
            "sample": self.sample,
            "issue": self.issue,
            "action": self.action,
            "source": self.source,
        }


_MEGC = (
    "MEGC 2019 composite list (Facial-Micro-ExpressionGC/MEGC2019, combined_3class_gt.csv); "
    "see data/megc2019/PROVENANCE.md"
)
# (dataset, sample id) -> (issue, source). The action comes from the rule that fires.
KNOWN: dict[tuple[str, str], tuple[str, str]] = {
    ("casme2", "casme2/04/EP12_01f"): (
        "ApexFrame is '/' in CASME2-coding-20190701.xlsx; the MEGC 2019 list leaves the clip out",
        "edge-mer issue 8; mer-domain.md §3-4 (21 apexes given as '/' in that sheet version)",
    ),
    ("samm", "samm/028/028_4_1"): (
        "Apex Frame outside Onset Frame..Offset Frame in SAMM_Micro_FACS_Codes_v2.xlsx",
        "edge-mer issue 8",
    ),
    ("samm", "samm/032/032_3_1"): (
        "Apex Frame before Onset Frame in SAMM_Micro_FACS_Codes_v2.xlsx; the earlier MEGC "
        "upload (combined_3class_gt-2.csv) drops the clip, the final list keeps it",
        f"edge-mer issue 8; {_MEGC}",
    ),
}


def known_for(dataset: str, sid: str) -> tuple[str, str] | None:
    """The recorded (issue, source) of sample ``sid``, if any."""
    return KNOWN.get((dataset, sid))


def _erratum(dataset: str, sid: str, issue: str, action: str) -> Erratum:
    known = known_for(dataset, sid)
    if known is not None:
        return Erratum(dataset, sid, f"{issue} ({known[0]})", action, known[1])
    return Erratum(dataset, sid, issue, action, "detected")


def check_marks(
    dataset: str,
    sid: str,
    onset: int,
    apex: int | None,
    offset: int,
    *,
    apex_text: str = "",
    last_frame: int | None = None,
) -> tuple[int | None, int | None, list[Erratum]]:
    """Apply the rules to one row: returns (apex, offset, errata).

    ``apex`` is ``None`` when the sheet gave none (``apex_text`` is the cell as written).
    ``last_frame`` is the clip folder's last frame number (None when clips are ranges of a
    longer recording). The returned offset is ``None`` when the row is unusable.
    """
    errata: list[Erratum] = []
    if offset < onset:
        if last_frame is not None and last_frame >= onset:
            errata.append(
                _erratum(
                    dataset,
                    sid,
                    f"offset {offset} before onset {onset}",
                    f"offset set to the folder's last frame {last_frame}",
                )
            )
            offset = last_frame
        else:
            errata.append(
                _erratum(
                    dataset,
                    sid,
                    f"offset {offset} before onset {onset}",
                    "sample left out (reported as bad-marks)",
                )
            )
            return apex, None, errata
    if apex is None:
        shown = apex_text.strip() or "blank"
        errata.append(
            _erratum(
                dataset,
                sid,
                f"no apex in the sheet ({shown!r})",
                "apex None; consumers use the onset-offset midpoint",
            )
        )
    elif not onset <= apex <= offset:
        errata.append(
            _erratum(
                dataset,
                sid,
                f"apex {apex} outside onset..offset {onset}..{offset}",
                "apex None; consumers use the onset-offset midpoint",
            )
        )
        apex = None
    return apex, offset, errata
