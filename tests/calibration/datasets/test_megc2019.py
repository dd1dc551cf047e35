"""The MEGC 2019 composite from the shipped official list: counts, naming, missing samples."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from edge_mer.calibration.datasets import megc2019
from edge_mer.calibration.datasets.megc2019 import (
    MissingSamplesError,
    build_megc2019,
    official_list,
    reconcile,
)
from edge_mer.calibration.datasets.summary import summarize_composite
from edge_mer.errors import EdgeMerError
from tests.calibration.datasets import copies


def test_official_list_counts_and_naming() -> None:
    entries = official_list()
    assert len(entries) == 442
    assert len({(e.dataset, e.subject) for e in entries}) == 68
    by = Counter((e.dataset, e.label) for e in entries)
    assert by == {
        ("casme2", "negative"): 88,
        ("casme2", "positive"): 32,
        ("casme2", "surprise"): 25,
        ("samm", "negative"): 92,
        ("samm", "positive"): 26,
        ("samm", "surprise"): 15,
        ("smic-hs", "negative"): 70,
        ("smic-hs", "positive"): 51,
        ("smic-hs", "surprise"): 43,
    }
    ids = {e.id for e in entries}
    assert {"casme2/01/EP02_01f", "samm/006/006_1_2", "smic-hs/s1/s1_ne_01"} <= ids
    assert "samm/032/032_3_1" in ids  # the final list keeps it (the -2 upload dropped it)
    assert "casme2/04/EP12_01f" not in ids and "casme2/05/EP09_05f" not in ids
    assert reconcile("smic", "s11", "s11_sur_03") == ("smic-hs", "s11", "s11_sur_03")
    assert reconcile("samm", "37", "037_3_2") == ("samm", "037", "037_3_2")
    assert reconcile("casme2", "sub26", "EP18_50") == ("casme2", "26", "EP18_50")


def test_damaged_list_is_refused(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "combined_3class_gt.csv"
    bad.write_bytes(megc2019.LIST_PATH.read_bytes().replace(b"EP02_01f,1", b"EP02_01f,0"))
    monkeypatch.setattr(megc2019, "LIST_PATH", bad)
    with pytest.raises(EdgeMerError, match="sha256"):
        official_list()
    monkeypatch.setattr(
        megc2019, "LIST_SHA256", megc2019.hashlib.sha256(bad.read_bytes()).hexdigest()
    )
    with pytest.raises(EdgeMerError, match="not the official"):
        official_list()


def test_composite_reproduces_the_official_counts(roots) -> None:
    comp = build_megc2019(roots["casme2"], roots["samm"], roots["smic-hs"])
    assert comp.missing == [] and comp.disagreements == []
    assert len(comp.samples) == 442 and len(comp.subjects) == 68
    s = summarize_composite(comp)
    got = {k: (d["samples"], d["subjects"], d["labels"]) for k, d in s["datasets"].items()}
    assert got == {
        "casme2": (145, 24, {"negative": 88, "positive": 32, "surprise": 25}),
        "samm": (133, 28, {"negative": 92, "positive": 26, "surprise": 15}),
        "smic-hs": (164, 16, {"negative": 70, "positive": 51, "surprise": 43}),
    }
    # fear, sadness and the two disgust clips are in the CASME II copy but not the composite
    ids = {x.id for x in comp.samples}
    assert "casme2/04/EP12_01f" not in ids
    assert [e["sample"] for e in s["errata"]] == ["samm/028/028_4_1", "samm/032/032_3_1"]


def test_missing_samples_are_named_and_refused(roots, tmp_path) -> None:
    smic = copies.write_smic(tmp_path / "smic")
    shutil.rmtree(smic / "HS" / "s3" / "micro" / "positive")
    lost = sorted(e.id for e in official_list() if e.id.startswith("smic-hs/s3/s3_po"))
    with pytest.raises(MissingSamplesError, match="--allow-missing") as e:
        build_megc2019(roots["casme2"], roots["samm"], smic)
    assert f"lack {len(lost)} of the 442" in str(e.value) and lost[0] in str(e.value)
    comp = build_megc2019(roots["casme2"], roots["samm"], smic, allow_missing=True)
    assert sorted(comp.missing) == lost
    s = summarize_composite(comp)
    assert s["samples"] == 442 - len(lost) and sorted(s["missing"]) == lost
    assert sorted(s["datasets"]["smic-hs"]["missing"]) == lost


def test_label_disagreement_is_reported(roots, tmp_path) -> None:
    rows = copies.casme2_rows()
    rows[0] = (rows[0][0], rows[0][1], "others")  # the list says positive
    c2 = copies.write_casme2(tmp_path / "c2", suffix=".csv", rows=rows)
    comp = build_megc2019(c2, roots["samm"], roots["smic-hs"])
    assert comp.disagreements == [
        {"sample": "casme2/01/EP02_01f", "sheet_emotion": "others", "official_label": "positive"}
    ]
    assert next(s for s in comp.samples if s.id == "casme2/01/EP02_01f").label == "positive"
