"""Spotting evaluation: scoring by hand-made cases, and a tiny bundle through the live
pipeline on synthetic streams (library and ``edge-mer spot-eval``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge_mer.bench.spotting import (
    ProbabilityTrace,
    SpotStream,
    TruthEvent,
    score_stream,
    summarize,
)
from edge_mer.bench.spotting_report import summary_lines, timeline_lines
from edge_mer.errors import InputError
from edge_mer.pipeline.spotter import Spotter


def _rec(onset: float, offset: float, label: str = "positive", kind: str = "micro_expression"):
    return {
        "type": kind,
        "label": label,
        "onset_ts": onset,
        "offset_ts": offset,
        "emitted_ts": offset + 0.2,
        "latency_ms": 1.5,
    }


TRUTH = (
    TruthEvent(1.0, 1.2, "micro", "positive"),
    TruthEvent(3.0, 3.4, "micro", "surprise"),
    TruthEvent(5.0, 6.0, "macro", "negative"),
    TruthEvent(9.5, 9.7, "micro", "negative"),  # beyond the scored 8 s
)


def test_score_stream_counts_matches_and_delays() -> None:
    stream = SpotStream("s", "synthetic://", TRUTH, seconds=8.0)
    records = [
        _rec(1.02, 1.2),  # IoU 0.9 with the first: TP, label right
        _rec(1.05, 1.15),  # a second event on the same truth: FP (one match per truth)
        _rec(3.3, 3.8, "negative"),  # IoU 0.1/0.8 < 0.5: FP, and the surprise is missed
        _rec(5.0, 6.0, "negative", "macro_expression"),  # macro events are not micro FPs
        _rec(9.5, 9.7),  # beyond `seconds`: not scored
    ]
    s = score_stream(stream, records)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 1)
    assert (s["truth_micro"], s["truth_macro"], s["events_micro"], s["events_macro"]) == (
        2, 1, 3, 1,
    )  # fmt: skip
    assert s["f1"] == pytest.approx(2 / (2 + 2 + 1))
    assert s["label_correct"] == s["label_total"] == 1
    assert s["detection_delay_ms"] == [pytest.approx(200.0)]


def test_summarize_pools_counts_and_false_alarms_per_minute() -> None:
    a = SpotStream("a", "x://", TRUTH[:2], seconds=30.0)
    b = SpotStream("b", "x://", TRUTH[:1], seconds=30.0)
    d = SpotStream("d", "x://", TRUTH[2:3], seconds=120.0, distractors_only=True)
    per = [
        score_stream(a, [_rec(1.0, 1.2), _rec(3.0, 3.4, "surprise")]),
        score_stream(b, [_rec(20.0, 20.2)]),
        score_stream(d, [_rec(10.0, 10.1), _rec(11.0, 11.1), _rec(5.0, 6.0, kind="macro_x")]),
    ]
    rep = summarize(per)
    m = rep["micro"]
    assert (m["tp"], m["fp"], m["fn"], m["streams"], m["truth"]) == (2, 1, 1, 2, 3)
    assert m["f1"] == pytest.approx(4 / 6)  # from summed counts, not a mean of per-stream F1
    assert (m["f1_min"], m["f1_max"]) == (0.0, 1.0)
    d_ = rep["distractors"]
    assert (d_["false_alarms"], d_["minutes"], d_["false_alarms_per_minute"]) == (2, 2.0, 1.0)
    assert d_["macro_events"] == 1 and d_["truth_macro"] == 1
    assert rep["latency"]["detection_delay"]["count"] == 2
    lines = summary_lines({**rep, "streams": per, "iou": 0.5})
    assert "F1 0.67" in lines[0] and "3 events for 3" in lines[0]
    assert "1.00 per minute" in lines[2]


def test_zero_events_are_reported_not_hidden() -> None:
    a = SpotStream("a", "x://", TRUTH[:2], seconds=30.0)
    per = [score_stream(a, [])]
    lines = summary_lines({**summarize(per), "streams": per, "iou": 0.5})
    assert "0 events for 2" in lines[0] and "recall 0.00" in lines[0]
    assert "no matched event" in lines[-1]
    text = "\n".join(timeline_lines(a, []))
    assert text.count("missed") == 2


def test_timeline_lists_matches_misses_and_false_alarms() -> None:
    a = SpotStream("a", "x://", TRUTH, seconds=8.0)
    lines = timeline_lines(
        a, [_rec(1.02, 1.2), _rec(3.3, 3.8, "surprise"), _rec(7.0, 7.1, "negative")]
    )
    assert "truth positive" in lines[0] and "IoU 0.90" in lines[0]
    assert "missed (an event overlaps it, IoU 0.13 < 0.5)" in lines[1]
    assert "false alarm" in lines[2] and "macro-expression" in lines[3]
    assert "false alarm" in lines[4]


def test_truth_event_checks_its_fields() -> None:
    with pytest.raises(InputError, match="kind"):
        TruthEvent(0.0, 1.0, "mega")
    with pytest.raises(InputError, match="onset <= offset"):
        TruthEvent(2.0, 1.0, "micro")


def test_probability_trace_records_and_delegates() -> None:
    sp = Spotter(["none", "a"], fps=10.0, smoothing_frames=1, on_threshold=0.3,
                 off_threshold=0.1, min_ms=0)  # fmt: skip
    tr = ProbabilityTrace(sp, lag_s=0.1, capacity=2)
    events = []
    for i in range(8):
        p = np.array([0.1, 0.9] if 3 <= i < 5 else [0.95, 0.05], np.float32)
        events += tr.update(7, i / 10, p)
    assert tr.n == 8 and tr.probs.shape == (8, 2) and tr.tracks == [7] * 8
    assert tr.ts[3] == pytest.approx(0.3) and tr.probs[3, 1] == pytest.approx(0.9)
    assert len(events) == 1 and tr.labels == ["none", "a"] and tr.fps == 10.0


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.models import build
    from edge_mer.convert.pipeline import ConvertOptions, convert
    from tests.conftest import TINY

    tmp = tmp_path_factory.mktemp("spot")
    torch.manual_seed(0)
    model = build(TINY)
    save_checkpoint(model, tmp / "m.safetensors", model.config)
    convert(tmp / "m.safetensors", tmp / "bundle", ConvertOptions())
    return tmp / "bundle"


# Thresholds this low make the random-weight model (its scores vary by ~1e-5) emit events.
EAGER = {"threshold_on": 1e-6, "threshold_off": 0.0, "smoothing_frames": 1, "min_duration_ms": 0}


def test_live_run_replays_exactly_and_scores(bundle: Path) -> None:
    from edge_mer.bench.spotting import evaluate_spotting, replay, spotter_from_config
    from edge_mer.calibration.spot_streams import synthetic_streams
    from edge_mer.config import SpotterConfig

    streams = synthetic_streams(subjects=1, seconds=4.0, fps=50.0, size=32, distractor_seconds=2)
    assert [s.distractors_only for s in streams] == [False, True]
    assert not any(t.kind == "micro" for t in streams[1].truth)
    report, results = evaluate_spotting(bundle, streams, spotter=EAGER)
    live = results[0]
    assert live.frames == 200 and live.trace is not None and live.trace.n == 200 - 5
    assert report["spotter"]["threshold_on"] == 1e-6
    assert len(report["streams"]) == 2 and report["distractors"]["minutes"] == pytest.approx(2 / 60)
    assert report["micro"]["truth"] == report["streams"][0]["truth_micro"]
    assert live.records, "the eager spotter emits events on this stream"
    # The recorded probabilities replayed through a fresh spotter give the same events.
    settings = SpotterConfig(**{**SpotterConfig().__dict__, **EAGER})
    again = replay(live.trace, ["none", "positive", "negative", "surprise"], 50.0, 6, settings)
    key = lambda r: (r["type"], r["label"], round(r["onset_ts"], 9), round(r["offset_ts"], 9))  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in live.records]
    # ... and the pipeline's spotter is the one spotter_from_config builds.
    ref = spotter_from_config(live.trace.labels, 50.0, settings)
    got = live.trace.spotter
    for name in ("labels", "background", "window", "on_threshold", "off_threshold", "min_s",
                 "max_micro_s", "refractory_s", "macro", "baseline_s"):  # fmt: skip
        assert getattr(got, name) == getattr(ref, name), name


def test_bad_spotter_setting_names_the_key(bundle: Path) -> None:
    from edge_mer.bench.spotting import evaluate_spotting
    from edge_mer.calibration.spot_streams import synthetic_streams

    streams = synthetic_streams(subjects=1, seconds=1.0, fps=50.0, size=32, distractor_seconds=0)
    with pytest.raises(InputError, match="threshold_onn"):
        evaluate_spotting(bundle, streams, spotter={"threshold_onn": 0.3})


def _invoke(*args: str):
    from edge_mer.cli.spot_cmd import spot_eval

    app = typer.Typer(add_completion=False)
    app.command("spot-eval")(spot_eval)

    @app.callback()
    def _root() -> None:
        pass

    return CliRunner().invoke(app, ["spot-eval", *args])


def test_cli_prints_figures_and_writes_json(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = _invoke(
        str(bundle), "--subjects", "1", "--seconds", "3", "--distractor-seconds", "2",
        "--fps", "50", "--spotter", "threshold_on=0.5", "--spotter", "threshold_off=0.2",
        "--json", str(out), "--events-dir", str(tmp_path / "ev"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "micro-expressions:" in res.output and "false alarms:" in res.output
    assert "subject 50000/0" in res.output
    rep = json.loads(out.read_text())
    assert rep["spotter"]["threshold_on"] == 0.5 and rep["iou"] == 0.5
    assert {"micro", "distractors", "latency", "streams"} <= set(rep)
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["000.jsonl", "001.jsonl"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--spotter", "threshold_on"], "KEY=VALUE"),
        (["--spotter", "smoothing=3"], "smoothing"),
        (["--subjects", "0"], "subjects=0"),
        (["--seconds", "0", "--distractor-seconds", "0"], "nothing to score"),
    ],
)
def test_cli_bad_inputs_are_one_line(bundle: Path, args: list[str], needle: str) -> None:
    res = _invoke(str(bundle), "--fps", "50", *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error:"), res.output
    assert needle in lines[0]
