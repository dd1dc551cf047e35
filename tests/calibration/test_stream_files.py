"""Coded streams on disk: what `edge-mer synth` writes beside the casme2 clips, read back
exactly as `edge-mer train` reads them; bad files are one line naming the file and row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_mer.calibration.stream_files import (
    find_streams,
    read_events,
    write_subject_streams,
)
from edge_mer.calibration.synth_stream import _stream_timeline
from edge_mer.errors import DataError
from edge_mer.pipeline.preprocess import FramePreprocessor


def test_subject_streams_round_trip_with_their_ground_truth(tmp_path: Path) -> None:
    summary = write_subject_streams(tmp_path, subjects=2, seconds=4.0, fps=25.0, size=(48, 48))
    assert summary["streams"] == 2
    streams = find_streams(tmp_path)
    assert [s.subject for s in streams] == ["01", "02"]
    assert [s.synthetic for s in streams] == [(0, 0), (0, 1)]
    for i, s in enumerate(streams):
        tl = _stream_timeline(4.0, 25.0, (48, 48), 0, i, 0.5, True)
        want = sorted(
            [(e.event.kind, e.event.onset_s, e.event.offset_s) for e in tl.events]
            + [("blink", np.floor(a) / 25.0, np.ceil(a + n) / 25.0) for a, n in tl.blinks],
            key=lambda r: r[1],
        )
        got = [(e.kind, e.onset_s, e.offset_s) for e in s.events]
        assert [g[0] for g in got] == [w[0] for w in want] and got
        np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-6)
        frames = s.load(FramePreprocessor(32, 32, 1), fps=50.0)  # upsampled by seconds
        assert frames.shape == (200, 32, 32, 1) and frames.dtype == np.uint8
    assert find_streams(tmp_path / "elsewhere") == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind,emotion,onset_s\nmicro,x,1\n", r"no column 'apex_s'"),
        ("kind,emotion,onset_s,apex_s,offset_s\nwink,,1,1,2\n", r"row 2: kind 'wink'"),
        ("kind,emotion,onset_s,apex_s,offset_s\nmicro,x,2,1,3\n", r"row 2: need 0 <= onset"),
        ("kind,emotion,onset_s,apex_s,offset_s\nmicro,x,a,1,3\n", r"row 2: onset_s, apex_s"),
    ],
)
def test_bad_events_files_are_named(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "x.events.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_events(path)
    assert "x.events.csv" in str(info.value)


def test_a_streams_folder_without_its_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "streams").mkdir()
    with pytest.raises(DataError, match=r"has no streams\.csv"):
        find_streams(tmp_path)
    (tmp_path / "streams" / "streams.csv").write_text("video,events,subject\nv.avi,v.csv,01\n")
    with pytest.raises(DataError, match=r"row 2: video .*v.avi' does not exist"):
        find_streams(tmp_path)
