import logging

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_mer.calibration.datasets.casme2 import (  # noqa: E402
    is_casme2_root,
    load_casme2,
    read_casme2,
)
from edge_mer.calibration.datasets.schema import Sample  # noqa: E402
from edge_mer.calibration.datasets.sheets import read_sheet  # noqa: E402
from edge_mer.errors import DataError, MissingDependencyError  # noqa: E402

HEADER = [
    "Subject",
    "Filename",
    "",
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    "Action Units",
    "Estimated Emotion",
]
ROWS = [
    # int subject, spacer column, numeric frames
    ["1", "EP02_01f", "", "7", "9", "11", "AU4", " Disgust "],
    # "/" apex, already padded subject
    ["02", "EP03_02", "", "3", "/", "5", "AU12", "happiness"],
    # no frame folder on disk: a missing-folder problem, logged
    ["03", "EP09_09", "", "1", "2", "3", "AU1", "others"],
]


def _write_frames(folder, numbers, prefix="img"):
    folder.mkdir(parents=True)
    for n in numbers:
        cv2.imwrite(str(folder / f"{prefix}{n}.jpg"), np.full((12, 16, 3), n * 10, np.uint8))


def _write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(f'"{c}"' for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def casme_root(tmp_path):
    root = tmp_path / "CASME2"
    root.mkdir()
    _write_csv(root / "CASME2-coding-20140508.csv", HEADER, ROWS)
    # img10 is written before img9 and must still sort after it.
    _write_frames(root / "sub01" / "EP02_01f", [7, 8, 10, 9, 11, 12])
    _write_frames(root / "sub02" / "EP03_02", [3, 4, 5], prefix="reg_img")
    return root


def test_load_casme2_parses_sheet_and_frames(casme_root, caplog):
    with caplog.at_level(logging.WARNING):
        clips = load_casme2(casme_root)
    assert [c.clip for c in clips] == ["EP02_01f", "EP03_02"]
    assert "casme2/03/EP09_09" in caplog.text and "missing-folder" in caplog.text

    first = clips[0]
    assert isinstance(first, Sample)
    assert first.id == "casme2/01/EP02_01f" and first.filename == first.clip == "EP02_01f"
    assert first.subject == "01"
    assert (first.onset, first.apex, first.offset) == (7, 9, 11)
    assert first.emotion == "Disgust" and first.canonical_emotion == "disgust"
    assert first.action_units == "AU4"
    assert first.fps == 200.0
    assert first.frame_numbers == (7, 8, 9, 10, 11, 12)
    assert [p.name for p in first.frame_paths] == [f"img{n}.jpg" for n in (7, 8, 9, 10, 11, 12)]
    assert (first.onset_index, first.apex_index, first.offset_index) == (0, 2, 4)

    second = clips[1]
    assert second.subject == "02"
    assert second.apex is None and second.apex_index is None
    assert second.frame_paths[0].name == "reg_img3.jpg"
    assert second.offset_index == 2


def test_read_casme2_reports_every_row(casme_root):
    copy = read_casme2(casme_root)
    assert copy.rows == 3 and len(copy.samples) == 2
    assert copy.missing == ["casme2/03/EP09_09"]
    (erratum,) = copy.errata
    assert erratum.sample == "casme2/02/EP03_02" and "'/'" in erratum.issue
    assert erratum.source == "detected"


def test_fps_is_carried(casme_root):
    assert {c.fps for c in load_casme2(casme_root, fps=100.0)} == {100.0}


def test_header_by_name_case_and_space_insensitive(tmp_path):
    sheet = tmp_path / "CASME2-coding.csv"
    header = ["Unnamed: 0", "estimated emotion", "FILENAME", "subject", "Offset Frame"]
    header += ["onset_frame", "apexframe"]
    _write_csv(sheet, header, [["", "Surprise", "EP01", "4", "20", "10", "15"], [""] * 7])
    rows = read_sheet(sheet, ["subject"]).records
    assert rows == [
        {
            "emotion": "Surprise",
            "filename": "EP01",
            "subject": "4",
            "offset": "20",
            "onset": "10",
            "apex": "15",
        }
    ]
    _write_frames(tmp_path / "sub04" / "EP01", [10, 15, 20])
    (clip,) = load_casme2(tmp_path)
    assert (clip.subject, clip.onset, clip.apex, clip.offset, clip.emotion) == (
        "04",
        10,
        15,
        20,
        "Surprise",
    )


def test_cropped_release_one_level_down(tmp_path):
    _write_csv(tmp_path / "CASME2-coding-20190701.csv", HEADER, ROWS[:1])
    _write_frames(tmp_path / "Cropped" / "sub01" / "EP02_01f", [7, 9, 11], prefix="reg_img")
    (clip,) = load_casme2(tmp_path)
    assert clip.frame_paths[0].parent == tmp_path / "Cropped" / "sub01" / "EP02_01f"


def test_is_casme2_root(casme_root, tmp_path):
    assert is_casme2_root(casme_root)
    assert not is_casme2_root(casme_root / "sub01")
    assert not is_casme2_root(casme_root / "CASME2-coding-20140508.csv")


def test_no_sheet_names_root(tmp_path):
    with pytest.raises(DataError, match="no CASME II coding sheet") as e:
        load_casme2(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_no_clips_on_disk(tmp_path):
    _write_csv(tmp_path / "CASME2-coding.csv", HEADER, ROWS)
    with pytest.raises(DataError, match="no CASME II frame folders"):
        load_casme2(tmp_path)
    (tmp_path / "sub07" / "EP01").mkdir(parents=True)
    with pytest.raises(DataError, match="do not match the casme2 annotations"):
        load_casme2(tmp_path)


def test_missing_column_and_bad_frame_number(tmp_path):
    _write_csv(
        tmp_path / "CASME2-coding.csv", ["Subject", "Filename", "OnsetFrame"], [["1", "a", "3"]]
    )
    _write_frames(tmp_path / "sub01" / "a", [3])
    with pytest.raises(DataError, match="lacks the column") as e:
        load_casme2(tmp_path)
    assert "['offset', 'emotion']" in str(e.value) and "'OnsetFrame'" in str(e.value)
    rows = [["1", "EP", "", "x3", "/", "5", "", "a"], ["1", "a", "", "3", "3", "3", "", "b"]]
    _write_csv(tmp_path / "CASME2-coding.csv", HEADER, rows)
    _write_frames(tmp_path / "sub01" / "EP", [3, 4, 5])
    copy = read_casme2(tmp_path)
    (bad,) = [p for p in copy.problems if p.kind == "bad-marks"]
    assert bad.sample == "casme2/01/EP" and "'x3'" in bad.detail
    assert [s.id for s in copy.samples] == ["casme2/01/a"]


def test_xlsx_sheet(tmp_path):
    try:
        import openpyxl
    except ImportError:
        (tmp_path / "CASME2-coding.xlsx").write_bytes(b"not read")
        with pytest.raises(MissingDependencyError, match="openpyxl"):
            load_casme2(tmp_path)
        return
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER)
    sheet.append([1, "EP02_01f", None, 7, "/", 11.0, "AU4", "Disgust"])
    book.save(tmp_path / "CASME2-coding-20140508.xlsx")
    _write_frames(tmp_path / "sub01" / "EP02_01f", [7, 9, 11])
    (clip,) = load_casme2(tmp_path)
    assert (clip.subject, clip.onset, clip.apex, clip.offset) == ("01", 7, None, 11)


def test_fps_declared_by_synth_readme(tmp_path) -> None:
    from edge_mer.calibration.synth_io import write_casme2

    root = write_casme2(
        tmp_path / "c",
        subjects=1,
        clips_per_emotion=1,
        fps=100.0,
        size=(48, 48),
        emotions=("happiness",),
    )
    assert {c.fps for c in load_casme2(root)} == {100.0}
    assert {c.fps for c in load_casme2(root, fps=50.0)} == {50.0}
    (root / "README.txt").write_text("no rate here\n")
    assert {c.fps for c in load_casme2(root)} == {200.0}
