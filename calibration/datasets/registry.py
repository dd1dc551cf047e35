"""The datasets edge-mer reads: names, documented facts and one entry point.

``read_dataset(name, root)`` returns a :class:`~edge_mer.calibration.datasets.schema.DatasetCopy`
for ``casme2``, ``samm``, ``smic-hs``, ``smic-vis``, ``smic-nir`` or ``casme3``;
``detect_dataset(root)`` says which layout a folder holds. :data:`DATASETS` carries what the
datasets' documentation states (fps, colour, counts of the annotation sheets, with their
source), which ``edge-mer datasets check`` and the README's label-map table use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_mer.calibration.datasets import casme2, casme3, samm, smic
from edge_mer.calibration.datasets.schema import DatasetCopy, is_synthetic
from edge_mer.errors import DataError

__all__ = ["DATASETS", "DatasetInfo", "detect_dataset", "read_dataset"]

_DOMAIN = "docs: mer-domain.md §3 (sheet counts)"


@dataclass(frozen=True)
class DatasetInfo:
    """Documented facts of one dataset. ``emotions``: sample count per sheet emotion of
    the documented sheet (None where not documented), ``source`` says which sheet."""

    name: str
    title: str
    fps: float
    color: str  # "color" | "gray" | "near-infrared (gray)"
    layout: str
    samples: int
    subjects: int
    emotions: dict[str, int] | None
    source: str
    reader: Callable[..., DatasetCopy] = field(repr=False)


def _smic(name: str) -> Callable[..., DatasetCopy]:
    def read(root: Path, **kw: object) -> DatasetCopy:
        return smic.read_smic(root, name, **kw)  # type: ignore[arg-type]

    return read


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "casme2",
            "CASME II",
            casme2.CASME2_FPS,
            "color",
            "CASME2-coding-*.xlsx|csv + [CASME2_RAW_selected|Cropped/]sub01/EP02_01f/img46.jpg",
            255,
            26,
            {
                "others": 99,
                "disgust": 63,
                "happiness": 32,
                "repression": 27,
                "surprise": 25,
                "sadness": 7,
                "fear": 2,
            },
            f"CASME2-coding-20140508.xlsx, 255 rows ({_DOMAIN})",
            casme2.read_casme2,
        ),
        DatasetInfo(
            "samm",
            "SAMM",
            samm.SAMM_FPS,
            "gray",
            "SAMM_Micro_FACS_Codes_v2.xlsx + SAMM/006/006_1_2/006_05562.jpg",
            159,
            29,
            {
                "Anger": 57,
                "Other": 26,
                "Happiness": 26,
                "Surprise": 15,
                "Contempt": 12,
                "Disgust": 9,
                "Fear": 8,
                "Sadness": 6,
            },
            f"SAMM_Micro_FACS_Codes_v2.xlsx, 159 rows ({_DOMAIN})",
            samm.read_samm,
        ),
        DatasetInfo(
            "smic-hs",
            "SMIC-HS",
            smic.SMIC_FPS["smic-hs"],
            "color",
            "HS/s1/micro/{negative,positive,surprise}/s1_ne_01/image<N>.jpg",
            164,
            16,
            {"negative": 70, "positive": 51, "surprise": 43},
            f"the micro set folders, 164 clips = the MEGC 2019 list smic part ({_DOMAIN})",
            _smic("smic-hs"),
        ),
        DatasetInfo(
            "smic-vis",
            "SMIC-VIS",
            smic.SMIC_FPS["smic-vis"],
            "color",
            "VIS/s1/micro/{negative,positive,surprise}/s1_ne_01/image<N>.jpg",
            71,
            8,
            None,
            f"official Oulu page: 71 clips of 8 subjects; class counts not documented ({_DOMAIN})",
            _smic("smic-vis"),
        ),
        DatasetInfo(
            "smic-nir",
            "SMIC-NIR",
            smic.SMIC_FPS["smic-nir"],
            "near-infrared (gray)",
            "NIR/s1/micro/{negative,positive,surprise}/s1_ne_01/image<N>.jpg",
            71,
            8,
            None,
            f"official Oulu page: 71 clips of 8 subjects; class counts not documented ({_DOMAIN})",
            _smic("smic-nir"),
        ),
        DatasetInfo(
            "casme3",
            "CAS(ME)^3 part A",
            casme3.CASME3_FPS,
            "color",
            "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx + ME_A/spNO.1/a/color/<N>.jpg",
            860,
            94,
            {
                "disgust": 250,
                "surprise": 187,
                "others": 161,
                "fear": 86,
                "anger": 64,
                "sad": 57,
                "happy": 55,
            },
            f"one copy of cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx, 860 rows ({_DOMAIN})",
            casme3.read_casme3,
        ),
    )
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"no dataset {name!r}: choose one of {', '.join(DATASETS)} (or megc2019 for the "
            "composite)"
        ) from None


def read_dataset(
    name: str, root: Path, *, fps: float | None = None, expected: list[str] | None = None
) -> DatasetCopy:
    """Read the copy of dataset ``name`` under ``root``.

    ``fps`` overrides the documented (or README-declared) rate. ``expected`` (SMIC only)
    lists the sample ids the copy should hold; for ``smic-hs`` it defaults to the MEGC 2019
    list's 164 clips, so a missing clip folder is reported by id (not for a synthetic copy,
    whose README.txt says so).
    """
    info = _info(name)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{info.title} root {str(root)!r} does not exist")
    kwargs: dict[str, object] = {"fps": fps}
    if name.startswith("smic-"):
        if expected is None and name == "smic-hs" and not is_synthetic(root):
            from edge_mer.calibration.datasets.megc2019 import official_list

            expected = [e.id for e in official_list() if e.dataset == "smic-hs"]
        kwargs["expected"] = expected
    elif expected is not None:
        raise DataError(f"expected= applies to SMIC only; {name} has a sheet")
    return info.reader(root, **kwargs)


def detect_dataset(root: Path) -> str | None:
    """Which dataset layout ``root`` holds (by its sheet, or SMIC's folders), or None.
    A SMIC root holding several variants answers ``smic-hs`` if HS is among them."""
    root = Path(root)
    if not root.is_dir():
        return None
    if casme2.find_sheet(root) is not None:
        return "casme2"
    if samm.find_sheet(root) is not None:
        return "samm"
    if casme3.find_sheet(root) is not None:
        return "casme3"
    for name in smic.SMIC_VARIANTS:
        try:
            smic.variant_root(root, name)
        except DataError:
            continue
        return name
    return None
