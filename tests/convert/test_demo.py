"""The embedded default, end to end, at a reduced size."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

from edge_mer.bundle import Bundle
from edge_mer.convert.demo import MARKER, prepare_dir, run_demo
from edge_mer.errors import InputError


@pytest.mark.slow
def test_small_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(
        out,
        subjects=4,
        clips_per_emotion=1,
        fps=100.0,
        cnn_epochs=1,
        rnn_epochs=2,
        stream_seconds=3.0,
    )
    bundle = Bundle.open(result["bundle"])  # hashes check out
    v = result["manifest"]["verification"]
    assert v["fp32"]["max_abs_streaming_vs_clip"] < 1e-4
    assert v["int8"]["top1_agreement"] >= 0.98
    assert "encoder_int8" in bundle.manifest["graphs"]
    assert {"encoder", "encoder_int8", "windows"} <= set(result["accuracy"])
    live = result["live"]
    assert result["live_stopped"] == "ended" and live.frames == 300
    assert (out / "events.jsonl").exists() and (out / MARKER).exists()
    # A second demo into the same folder replaces the first one's output.
    prepare_dir(out)
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="not made by `edge-mer demo`"):
        prepare_dir(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"
