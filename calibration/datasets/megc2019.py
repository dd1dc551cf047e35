"""The MEGC 2019 composite (CASME II + SAMM + SMIC-HS, three classes) from the official list.

The organisers' ``combined_3class_gt.csv`` ships in ``data/megc2019/`` with its provenance;
the composite is built from that list, not from a label map: the official CASME II part
leaves out every fear and sadness clip and two disgust clips, which no map reproduces. At
load time the list's sha256 and its counts are asserted exactly:

=======  =======  ========  ========  ========  ========
part     samples  subjects  negative  positive  surprise
=======  =======  ========  ========  ========  ========
casme2   145      24        88        32        25
samm     133      28        92        26        15
smic     164      16        70        51        43
total    442      68
=======  =======  ========  ========  ========  ========

The list's names differ from the datasets' files; :func:`reconcile` maps them to sample
ids: ``casme2,sub01,EP02_01f`` -> ``casme2/01/EP02_01f``; ``samm,6,006_1_2`` ->
``samm/006/006_1_2``; ``smic,s01,s01_ne_01`` -> ``smic-hs/s1/s1_ne_01``.

:func:`build_megc2019` pairs every list entry with the user's copy. Entries the copy lacks
are reported by sample id and refused (:class:`MissingSamplesError`, exit 2) unless
``allow_missing``; then :attr:`Composite.missing` says which, and every result built on it
must carry that list.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_mer.calibration.datasets.labels import Labelled, get_map
from edge_mer.calibration.datasets.schema import DatasetCopy, sample_id
from edge_mer.errors import EdgeMerError, InputError

__all__ = [
    "EXPECTED",
    "LABELS",
    "LIST_PATH",
    "Composite",
    "ListEntry",
    "MissingSamplesError",
    "build_megc2019",
    "official_list",
    "reconcile",
]

LIST_PATH = Path(__file__).parent / "data" / "megc2019" / "combined_3class_gt.csv"
LIST_SHA256 = "adf1de4a088d4c3b3bd01cc8d061e836264d0e05140266eb15d8dc1050f484a7"
LABELS = ("negative", "positive", "surprise")  # the list's 0, 1, 2
# list part -> (samples, subjects, {label: count}); our dataset name for the part.
EXPECTED = {
    "casme2": (145, 24, {"negative": 88, "positive": 32, "surprise": 25}),
    "samm": (133, 28, {"negative": 92, "positive": 26, "surprise": 15}),
    "smic": (164, 16, {"negative": 70, "positive": 51, "surprise": 43}),
}
EXPECTED_TOTAL = (442, 68)
DATASET_OF_PART = {"casme2": "casme2", "samm": "samm", "smic": "smic-hs"}


class MissingSamplesError(InputError):
    """The copy lacks samples of the official list (and missing ones were not allowed)."""


@dataclass(frozen=True)
class ListEntry:
    """One row of the official list, with the names of the datasets' own files."""

    dataset: str  # casme2 | samm | smic-hs
    subject: str  # "01", "006", "s1"
    clip: str  # "EP02_01f", "006_1_2", "s1_ne_01"
    label: str  # negative | positive | surprise
    listed: tuple[str, str, str]  # the row's (dataset, subject, clip) as the list writes them

    @property
    def id(self) -> str:
        return sample_id(self.dataset, self.subject, self.clip)


def reconcile(part: str, subject: str, clip: str) -> tuple[str, str, str]:
    """The list's (dataset, subject, clip) -> the datasets' (dataset, subject, clip)."""
    if part == "casme2":
        number = subject[3:] if subject.lower().startswith("sub") else subject
        return "casme2", f"{int(number):02d}", clip
    if part == "samm":
        return "samm", f"{int(subject):03d}", clip
    if part == "smic":
        number = int(subject.lstrip("sS"))
        head, _, tail = clip.partition("_")
        return "smic-hs", f"s{number}", f"s{int(head.lstrip('sS'))}_{tail}"
    raise EdgeMerError(f"the MEGC 2019 list names an unknown dataset {part!r}")


def official_list() -> list[ListEntry]:
    """The 442 entries of the shipped list, after checking its sha256 and every count."""
    data = LIST_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != LIST_SHA256:
        raise EdgeMerError(
            f"{LIST_PATH} has sha256 {digest}, not the official {LIST_SHA256}: the installed "
            "package is damaged; reinstall edge-mer"
        )
    entries = []
    for row in csv.reader(io.StringIO(data.decode("utf-8"))):
        if not row:
            continue
        part, subject, clip, code = (c.strip() for c in row)
        dataset, ours_subject, ours_clip = reconcile(part, subject, clip)
        entries.append(
            ListEntry(dataset, ours_subject, ours_clip, LABELS[int(code)], (part, subject, clip))
        )
    _assert_counts(entries)
    return entries


def _assert_counts(entries: list[ListEntry]) -> None:
    found = {}
    for part, dataset in DATASET_OF_PART.items():
        mine = [e for e in entries if e.dataset == dataset]
        found[part] = (
            len(mine),
            len({e.subject for e in mine}),
            dict(Counter(e.label for e in mine)),
        )
    total = (len(entries), len({(e.dataset, e.subject) for e in entries}))
    ids = [e.id for e in entries]
    if found != EXPECTED or total != EXPECTED_TOTAL or len(set(ids)) != len(ids):
        raise EdgeMerError(
            f"the MEGC 2019 list gives {found} (total {total}), not the official {EXPECTED} "
            f"(total {EXPECTED_TOTAL}): the installed package is damaged"
        )


@dataclass
class Composite:
    """The composite on one copy: labelled samples (official labels) in list order, the
    list's ids the copy lacks, the three copies as read, and the samples whose sheet
    emotion (under ``megc3``) or SMIC folder disagrees with the official label."""

    samples: list[Labelled]
    missing: list[str]
    copies: dict[str, DatasetCopy]
    entries: list[ListEntry]
    disagreements: list[dict[str, str]] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(s.subject_key for s in self.samples))


def build_megc2019(
    casme2: Path, samm: Path, smic_hs: Path, *, allow_missing: bool = False
) -> Composite:
    """Read the three copies and pair them with the official list.

    Raises :class:`MissingSamplesError` naming the missing sample ids unless
    ``allow_missing``. A copy's samples outside the list are simply not part of the composite.
    """
    from edge_mer.calibration.datasets.registry import read_dataset

    entries = official_list()
    smic_ids = [e.id for e in entries if e.dataset == "smic-hs"]
    copies = {
        "casme2": read_dataset("casme2", casme2),
        "samm": read_dataset("samm", samm),
        "smic-hs": read_dataset("smic-hs", smic_hs, expected=smic_ids),
    }
    by_id = {s.id: s for copy in copies.values() for s in copy.samples}
    megc3 = get_map("megc3")
    samples, missing, disagreements = [], [], []
    for e in entries:
        sample = by_id.get(e.id)
        if sample is None:
            missing.append(e.id)
            continue
        samples.append(Labelled(sample, e.label))
        if megc3.mapping.get(sample.canonical_emotion) != e.label:
            disagreements.append(
                {"sample": e.id, "sheet_emotion": sample.emotion, "official_label": e.label}
            )
    if missing and not allow_missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise MissingSamplesError(
            f"the copies lack {len(missing)} of the 442 MEGC 2019 samples ({shown}); run "
            "'edge-mer datasets check megc2019 ...' for the list, complete the copies, or pass "
            "--allow-missing to run without them (results then name them)"
        )
    return Composite(samples, missing, copies, entries, disagreements)
