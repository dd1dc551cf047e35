"""Every reader on a copy laid out as distributed, with the documented sheet counts."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from edge_mer.calibration.datasets import DATASETS, apply_map, detect_dataset, read_dataset
from edge_mer.calibration.datasets.summary import documented_table
from edge_mer.errors import DataError
from tests import REPO
from tests.calibration.datasets import copies


@pytest.mark.parametrize("name", ["casme2", "samm", "smic-hs", "casme3"])
def test_full_count_with_subjects_as_text(roots, name) -> None:
    copy = read_dataset(name, roots[name])
    info = DATASETS[name]
    assert len(copy.samples) == info.samples and copy.missing == []
    assert len(copy.subjects) == info.subjects
    assert dict(copy.emotions()) == info.emotions
    assert all(isinstance(s.subject, str) and isinstance(s.clip, str) for s in copy.samples)
    assert all(s.id == f"{name}/{s.subject}/{s.clip}" for s in copy.samples)
    assert len({s.id for s in copy.samples}) == len(copy.samples)
    assert {s.fps for s in copy.samples} == {info.fps}
    for s in copy.samples:  # numerically sorted frames, marks inside them
        assert list(s.frame_numbers) == sorted(s.frame_numbers)
        assert s.frame_numbers[0] <= s.onset <= s.offset <= s.frame_numbers[-1]


def test_ids_stay_text(roots) -> None:
    casme2 = read_dataset("casme2", roots["casme2"])  # xlsx cells hold the numbers 1..26
    assert casme2.subjects[:3] == ["01", "02", "03"]
    samm = read_dataset("samm", roots["samm"])  # preamble; first subject stored as 6
    assert samm.samples[0].id == "samm/006/006_1_2"
    assert "038" in samm.subjects and all(len(s) == 3 for s in samm.subjects)
    smic = read_dataset("smic-hs", roots["smic-hs"])
    assert smic.samples[0].id == "smic-hs/s1/s1_ne_01"


def test_label_maps_give_the_readme_table(roots) -> None:
    """The README's table is computed from the documented counts; the readers, fed copies
    with those counts, give the same numbers."""
    assert documented_table() in (REPO / "README.md").read_text()
    expected = {
        ("casme2", "megc3"): {"negative": 99, "positive": 32, "surprise": 25},
        ("casme2", "cdmer3"): {"negative": 72, "positive": 32, "surprise": 25},
        ("casme2", "casme2-5"): {
            "happiness": 32,
            "disgust": 63,
            "repression": 27,
            "surprise": 25,
            "others": 99,
        },
        ("samm", "megc3"): {"negative": 92, "positive": 26, "surprise": 15},
        ("samm", "samm-5"): {
            "anger": 57,
            "contempt": 12,
            "happiness": 26,
            "surprise": 15,
            "others": 26,
        },
        ("smic-hs", "megc3"): {"negative": 70, "positive": 51, "surprise": 43},
        ("casme3", "megc3"): {"negative": 457, "positive": 55, "surprise": 187},
    }
    for (name, map_name), counts in expected.items():
        kept, _ = apply_map(read_dataset(name, roots[name]).samples, map_name)
        assert Counter(s.label for s in kept) == counts, (name, map_name)


def test_errata_are_reported_with_sources(roots) -> None:
    casme2 = read_dataset("casme2", roots["casme2"])
    (e,) = casme2.errata
    assert e.sample == "casme2/04/EP12_01f" and "issue 8" in e.source
    assert casme2.by_id()["casme2/04/EP12_01f"].apex is None
    samm = read_dataset("samm", roots["samm"])
    assert {e.sample for e in samm.errata} == {"samm/028/028_4_1", "samm/032/032_3_1"}
    assert all(samm.by_id()[e.sample].apex is None for e in samm.errata)
    assert any("PROVENANCE" in e.source for e in samm.errata)


def test_casme3_duplicates_and_text_frames(roots, tmp_path) -> None:
    copy = read_dataset("casme3", roots["casme3"])
    one = [s for s in copy.samples if s.subject == "spNO.1" and s.clip.startswith("a")]
    assert [(s.clip, s.onset) for s in one] == [("a-1", 10), ("a-2", 13), ("a-3", 16)]
    assert one[1].frame_numbers == (13, 14)  # onset..offset of the recording's frames
    assert {s.subject for s in copy.samples if s.clip == "b-3"} == {
        f"spNO.{k}" for k in range(1, 15)
    }
    # ids do not depend on the sheet's row order
    rows = [r for r in copies.casme3_rows() if r[0] in ("spNO.1", "spNO.2")]
    first = read_dataset("casme3", copies.write_casme3(tmp_path / "a", suffix=".csv", rows=rows))
    again = read_dataset("casme3", copies.write_casme3(tmp_path / "b", rows=rows[::-1]))
    assert {s.id: s.onset for s in again.samples} == {s.id: s.onset for s in first.samples}
    assert len(first.samples) == len(rows)


def test_smic_has_no_apex_and_says_so(roots, tmp_path) -> None:
    copy = read_dataset("smic-hs", roots["smic-hs"])
    assert all(s.apex is None for s in copy.samples)
    assert any("no apex" in n for n in copy.notes)
    s = copy.samples[0]
    assert (s.onset, s.offset, s.emotion) == (s.frame_numbers[0], s.frame_numbers[-1], "negative")
    nir = copies.write_smic(tmp_path / "smic", "NIR", [("s3", "surprise", "s3_sur_01")])
    copy = read_dataset("smic-nir", nir)
    assert [x.id for x in copy.samples] == ["smic-nir/s3/s3_sur_01"] and copy.fps == 25.0
    assert any("gray" in n for n in copy.notes)
    assert read_dataset("smic-nir", nir / "NIR").samples == copy.samples


def test_missing_and_damaged_samples_are_reported(roots, tmp_path) -> None:
    rows = copies.casme2_rows()[:6]
    root = copies.write_casme2(tmp_path / "c2", suffix=".csv", rows=rows)
    frames = root / "CASME2_RAW_selected"
    shutil.rmtree(frames / "sub01" / "EP02_01f")
    (frames / "sub01" / "EP19_05f" / "img11.jpg").unlink()
    for f in (frames / "sub01" / "EP19_06f").iterdir():
        f.unlink()
    copy = read_dataset("casme2", root)
    assert copy.missing == ["casme2/01/EP02_01f", "casme2/01/EP19_06f"]
    assert {(p.sample, p.kind) for p in copy.problems} == {
        ("casme2/01/EP02_01f", "missing-folder"),
        ("casme2/01/EP19_05f", "gap"),
        ("casme2/01/EP19_06f", "no-frames"),
    }
    assert len(copy.samples) == 4 and copy.rows == 6
    smic = copies.write_smic(tmp_path / "smic")
    shutil.rmtree(smic / "HS" / "s20" / "micro" / "surprise")
    copy = read_dataset("smic-hs", smic)
    assert len(copy.missing) > 0 and all(i.startswith("smic-hs/s20/s20_sur") for i in copy.missing)


def test_detect_and_wrong_roots(roots, tmp_path) -> None:
    assert {n: detect_dataset(r) for n, r in roots.items()} == {n: n for n in roots}
    assert detect_dataset(tmp_path) is None
    with pytest.raises(DataError, match=r"no SAMM sheet.*SAMM_Micro_FACS_Codes_v2\.xlsx"):
        read_dataset("samm", roots["casme2"])
    with pytest.raises(DataError, match=r"not a SMIC VIS copy.*VIS/s1/micro"):
        read_dataset("smic-vis", roots["smic-hs"])
    with pytest.raises(DataError, match="no dataset 'casme'"):
        read_dataset("casme", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_dataset("casme2", tmp_path / "nope")


def test_samm_csv_export_and_subject_padding(tmp_path: Path) -> None:
    rows = [("6", "006_1_2", "Happiness"), ("007", "007_3_1", "Other")]
    data = [*copies.SAMM_PREAMBLE, copies.SAMM_HEADER]
    for subject, clip, emotion in rows:
        data.append([subject, clip, "1", 5, 6, 8, 4, "1", "II", "", "R12", emotion])
        copies.touch_frames(
            tmp_path / "SAMM" / clip[:3] / clip, [f"{clip[:3]}_{n:05d}.jpg" for n in range(5, 9)]
        )
    copies.write_sheet(tmp_path / "SAMM_Micro_FACS_Codes_v2.csv", data)
    copy = read_dataset("samm", tmp_path)
    assert [s.id for s in copy.samples] == ["samm/006/006_1_2", "samm/007/007_3_1"]
    assert copy.problems == []
