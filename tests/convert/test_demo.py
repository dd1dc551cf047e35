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
        subject_streams=4.0,
        stream_seconds=3.0,
    )
    bundle = Bundle.open(result["bundle"])  # hashes check out
    v = result["manifest"]["verification"]
    assert v["fp32"]["max_abs_streaming_vs_clip"] < 1e-4
    assert v["int8"]["top1_agreement"] >= 0.98
    assert "encoder_int8" in bundle.manifest["graphs"]
    assert result["train"]["streams"] == 4  # one per training subject
    assert bundle.manifest["spotter"]["chosen_on"]["synthetic_subjects"] == [
        [0, i] for i in range(4)
    ]
    assert bundle.manifest["model"]["config"]["reference"] == "window-start"
    assert {"encoder", "encoder_int8", "windows"} <= set(result["accuracy"])
    spot, results = result["spot"], result["spot_results"]
    # 2 unseen subjects x 3 s at 100 fps, and 1.5 s distractor-only each
    assert [r.frames for r in results] == [300, 300, 150, 150]
    assert [r.extra["stopped"] for r in results] == ["frames"] * 4
    assert spot["micro"]["streams"] == 2 and spot["distractors"]["streams"] == 2
    assert spot["micro"]["truth"] == sum(
        1 for r in results[:2] for t in r.stream.truth if t.kind == "micro"
    )
    assert len(list((out / "events").glob("*.jsonl"))) == 4 and (out / MARKER).exists()
    # A second demo into the same folder replaces the first one's output.
    prepare_dir(out)
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_demo_prints_events_against_truth_and_never_a_bare_zero(capsys) -> None:
    from edge_mer.bench.spotting import (
        SpotStream,
        StreamResult,
        TruthEvent,
        score_stream,
        summarize,
    )
    from edge_mer.cli.demo_cmd import print_live

    stream = SpotStream(
        "subject 50000/0",
        "synthetic://",
        (TruthEvent(1.0, 1.2, "micro", "positive"), TruthEvent(3.0, 3.3, "micro", "surprise")),
        seconds=5.0,
    )
    per = [score_stream(stream, [])]
    spot = {**summarize(per), "streams": per, "iou": 0.5}
    print_live(spot, [StreamResult(stream, [])], Path("ev"))
    out = capsys.readouterr().out
    assert "2 micro-expressions" in out and out.count("missed") == 2
    assert "0 events for 2 in the ground truth" in out and "recall 0.00" in out


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="not made by `edge-mer demo`"):
        prepare_dir(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"
