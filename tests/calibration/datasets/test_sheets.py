"""Sheets read by header name with every cell as text; label normalisation and maps."""

from __future__ import annotations

import builtins
import datetime

import pytest

from edge_mer.calibration.datasets import apply_map, get_map, normalise_emotion
from edge_mer.calibration.datasets.labels import LABEL_MAPS, LabelMapError, describe_maps
from edge_mer.calibration.datasets.schema import Sample, list_frames
from edge_mer.calibration.datasets.sheets import read_sheet
from edge_mer.errors import DataError, MissingDependencyError
from tests.calibration.datasets.copies import SAMM_HEADER, SAMM_PREAMBLE, write_sheet


def test_xlsx_ids_stay_text_and_preamble_is_skipped(tmp_path) -> None:
    rows = [
        *SAMM_PREAMBLE,
        SAMM_HEADER,
        ["006", "006_1_2", "1", "5562", 5585, 5601.0, 40, "1", "V", "", "R12", "Happiness"],
        [6, "006_1_3", "1", 100, "/", 120, 20, "1", "V", "", "R12", datetime.date(2020, 1, 2)],
        [None] * 12,
    ]
    sheet = read_sheet(write_sheet(tmp_path / "s.xlsx", rows), ["subject", "onset"])
    assert [r["subject"] for r in sheet.records] == ["006", "6"]  # text kept, numbers as digits
    assert sheet.records[0]["offset"] == "5601" and sheet.records[0]["onset"] == "5562"
    assert sheet.records[1]["apex"] == "/" and sheet.records[1]["emotion"].startswith("2020-01-02")
    assert sheet.lines == [14, 15] and sheet.where(0) == "s.xlsx row 14"
    assert "objective_class" in sheet.records[0]


def test_csv_spacers_aliases_and_first_header_wins(tmp_path) -> None:
    rows = [
        ["Unnamed: 0", "Subject", "Filename", "", "Onset", "OnsetFrame", "Estimated Emotion"],
        ["x", "01", "EP01", "junk", "7", "9", "Other"],
    ]
    sheet = read_sheet(write_sheet(tmp_path / "s.csv", rows), ["subject"])
    assert sheet.records == [
        {"subject": "01", "filename": "EP01", "onset": "7", "emotion": "Other"}
    ]


def test_missing_columns_are_named_with_the_columns_found(tmp_path) -> None:
    path = write_sheet(tmp_path / "s.csv", [["Subject", "Filename", "Onset"], ["1", "a", "2"]])
    with pytest.raises(DataError) as e:
        read_sheet(path, ["subject", "onset", "offset", "emotion"])
    assert "['offset', 'emotion']" in str(e.value)
    assert "['Subject', 'Filename', 'Onset']" in str(e.value)
    no_header = write_sheet(tmp_path / "t.csv", [["a", "b"], ["1", "2"]])
    with pytest.raises(DataError, match="no header row naming 'Subject' and 'Filename'"):
        read_sheet(no_header, ["subject"])
    with pytest.raises(DataError, match=r"save it as \.xlsx"):
        read_sheet(tmp_path / "CASME2_label_Ver_2.xls", ["subject"])


def test_xlsx_without_openpyxl_names_the_extra(tmp_path, monkeypatch) -> None:
    path = write_sheet(tmp_path / "s.xlsx", [["Subject", "Filename"], ["01", "a"]])
    real = builtins.__import__

    def no_openpyxl(name, *args, **kwargs):
        if name == "openpyxl":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openpyxl)
    with pytest.raises(MissingDependencyError, match=r"edge-mer\[datasets\]"):
        read_sheet(path, ["subject"])


def test_frames_sort_numerically(tmp_path) -> None:
    for name in ("img10.jpg", "img9.jpg", "img100.jpg", "reg_img9.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    frames = list_frames(tmp_path)
    assert list(frames) == [9, 10, 100] and frames[9].name == "reg_img9.jpg"


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("Other", "others"),
        (" others ", "others"),
        ("happy", "happiness"),
        ("Happiness", "happiness"),
        ("sad", "sadness"),
        ("Repression", "repression"),
        ("SURPRISE", "surprise"),
        ("negative", "negative"),
    ],
)
def test_spellings_fold_in_one_place(text, word) -> None:
    assert normalise_emotion(text) == word


def test_unknown_words_and_maps_are_refused() -> None:
    with pytest.raises(LabelMapError, match="'joy' is not one"):
        normalise_emotion("joy")
    assert normalise_emotion("Joy", strict=False) == "joy"
    with pytest.raises(LabelMapError, match="no label map 'megc'"):
        get_map("megc")
    with pytest.raises(LabelMapError, match="'casme2-5' does not know the emotion 'negative'"):
        get_map("casme2-5").label("negative")


def _sample(emotion: str, clip: str = "c") -> Sample:
    return Sample("samm", "006", clip, 1, None, 2, 200.0, emotion, (), ())


def test_maps_as_the_issue_defines_them() -> None:
    megc3 = get_map("megc3")
    for e in ("disgust", "repression", "anger", "contempt", "fear", "sadness"):
        assert megc3.label(e) == "negative"
    assert (megc3.label("Happiness"), megc3.label("surprise"), megc3.label("Other")) == (
        "positive",
        "surprise",
        None,
    )
    cdmer3 = get_map("cdmer3")
    assert [cdmer3.label(e) for e in ("disgust", "fear", "sadness")] == ["negative"] * 3
    assert cdmer3.label("repression") is None and cdmer3.label("others") is None
    assert get_map("casme2-5").labels == (
        "happiness",
        "disgust",
        "repression",
        "surprise",
        "others",
    )
    assert get_map("samm-5").labels == ("anger", "contempt", "happiness", "surprise", "others")
    assert get_map("raw").label("sad") == "sadness"
    kept, dropped = apply_map([_sample("Anger", "a"), _sample("Other", "b")], "megc3")
    assert [(k.id, k.label) for k in kept] == [("samm/006/a", "negative")]
    assert [d.clip for d in dropped] == ["b"]
    with pytest.raises(LabelMapError, match="samm/006/x: label map 'samm-5'"):
        apply_map([_sample("repression", "x")], "samm-5")
    text = describe_maps()
    assert all(f"{name}:" in text for name in LABEL_MAPS)
    assert "negative    = disgust, repression, fear, sadness, anger, contempt" in text
