"""Training on streams: window labels, stage-1 pairs, the spotter chosen on the training
streams, and end to end: synth (streams beside the clips) -> train -> convert -> the
manifest's spotter -> `run` and `spot-eval` use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from edge_mer.convert.train import TrainOptions, TrainStream, fit  # noqa: E402
from edge_mer.convert.train_streams import (  # noqa: E402
    IGNORE,
    StreamEvent,
    stream_pairs,
    stream_windows,
    window_labels,
)
from edge_mer.errors import InputError  # noqa: E402
from tests.conftest import TINY  # noqa: E402

LABELS = ["none", "positive", "negative", "surprise"]
T = 8


def stream(n: int = 120, events=(), seed: int = 0) -> TrainStream:
    frames = np.random.default_rng(seed).integers(90, 110, (n, 32, 32, 1), dtype=np.uint8)
    return TrainStream(frames, list(events), "01", "s", 50.0, (0, 0))


def test_window_labels_follow_the_recipe() -> None:
    """Emotion from half-way up the onset->apex rise to a quarter window after the offset;
    the windows just before and the 2 just after left out; everything else background,
    macro-expressions and blinks included."""
    micro = StreamEvent("micro", "surprise", 40, 44, 50)
    macro = StreamEvent("macro", None, 80, 90, 100)
    blink = StreamEvent("blink", None, 20, 22, 25)
    y = window_labels(stream(events=[micro, macro, blink]), LABELS, T, T // 4, 0)
    assert (y[: T - 1] == IGNORE).all()
    first, last = 40 + 2, 50 + 2
    assert (y[first : last + 1] == 3).all()
    assert (y[40:first] == IGNORE).all() and (y[last + 1 : last + 3] == IGNORE).all()
    assert (y[last + 3 : 50 + T] == 0).all()  # still holds the ended event: background
    assert (y[[T - 1, 22, 39, 85, 110]] == 0).all()
    unknown = StreamEvent("micro", None, 40, 44, 50)  # an emotion with no class: left out
    y = window_labels(stream(events=[unknown]), LABELS, T, T // 4, 0)
    assert (y[40 : 50 + T] == IGNORE).all() and y[39] == 0


def test_hard_background_kept_plain_background_sampled() -> None:
    micro = StreamEvent("micro", "positive", 100, 104, 110)
    macro = StreamEvent("macro", None, 200, 210, 240)
    s = stream(400, [micro, macro])
    rows, y = stream_windows([s], LABELS, T, 0, np.random.default_rng(0), first_index=3)
    assert (rows[:, 0] == 3).all()
    ends = set(rows[:, 1].tolist())
    assert set(range(200, 240 + T)) <= ends  # every window touching the macro-expression
    n_pos = int((y == 1).sum())
    assert n_pos == 110 + T // 4 - 102 + 1
    plain = [e for e in ends if not (100 <= e < 110 + T or 200 <= e < 240 + T)]
    hard = (y == 0).sum() - len(plain)
    assert len(plain) == max(2 * n_pos - hard, 8)  # two per positive, hard ones counted
    rows, y = stream_windows([stream(400, [micro])], LABELS, T, 0, np.random.default_rng(0))
    assert (y == 0).sum() == 2 * n_pos


def test_stage1_pairs_reference_before_onset_target_near_apex() -> None:
    micro = StreamEvent("micro", "negative", 60, 66, 72)
    s = stream(200, [micro])
    s.frames[:, 0, 0, 0] = np.arange(200)  # frame index, readable back from the pairs
    x, y = stream_pairs([s], LABELS, T, 0, np.random.default_rng(0), per_event=8)
    idx = x[:, :, 0, 0, 0].astype(int)
    emo = idx[y == 2]
    assert len(emo) == 8
    assert ((emo[:, 0] >= 60 - T + 1) & (emo[:, 0] < 60)).all()
    assert ((emo[:, 1] >= 64) & (emo[:, 1] <= 68)).all()
    bg = idx[y == 0]
    assert len(bg) and ((bg[:, 1] - bg[:, 0] >= 1) & (bg[:, 1] - bg[:, 0] < T)).all()
    assert not ((bg[:, 1] >= 59) & (bg[:, 0] <= 73)).any()  # never touching the micro


def test_streams_need_a_background_class() -> None:
    cfg = {**TINY, "labels": ["positive", "negative", "surprise"]}
    with pytest.raises(InputError, match="training on streams needs a background label"):
        fit([], cfg, options=TrainOptions(cnn_epochs=1, head_epochs=1), streams=[stream()])


def moving_stream(seed: int, n: int = 600) -> TrainStream:
    """A learnable stream: a bright patch rises and falls at a height per label."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(100, 4, (n, 32, 32, 1))
    events = []
    t = 10
    while t + 30 < n:
        k = int(rng.integers(3))
        a, p, b = t, t + 3, t + 6
        for i in range(a, b + 1):
            frames[i, 3 + 9 * k : 11 + 9 * k, 8:24] += 60 * (1 - abs(i - p) / 4)
        events.append(StreamEvent("micro", LABELS[1 + k], a, p, b))
        t += int(rng.integers(20, 35))
    return TrainStream(np.clip(frames, 0, 255).astype(np.uint8), events, f"{seed:02d}", "m")


def test_fit_on_streams_chooses_the_spotter_on_them() -> None:
    cfg = {**TINY, "input": {**TINY["input"], "window": T}, "reference": "window-start"}
    opts = TrainOptions(cnn_epochs=3, head_epochs=6, threads=1, batch_size=32)
    result = fit([], cfg, options=opts, streams=[moving_stream(1), moving_stream(2)])
    s = result.summary
    assert s["streams"] == 2 and s["clips"] == 0 and s["stream_frames"] == 1200
    sp = result.spotter
    assert set(sp["settings"]) == {
        "threshold_on",
        "threshold_off",
        "smoothing_frames",
        "lag_frames",
        "min_duration_ms",
    }
    on = sp["chosen_on"]
    assert on["streams"] == 2 and on["subjects"] == ["01", "02"] and on["settings_tried"] == 216
    assert on["f1"] > 0.3  # the model learnt the patches; the spotter finds them


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """synth (2 subjects, 6 s streams) -> `edge-mer train` -> `edge-mer convert`."""
    from edge_mer.calibration.synth_io import synthesize
    from tests.edge.test_cli import run

    root = tmp_path_factory.mktemp("streams")
    summary = synthesize(
        root / "data",
        subjects=2,
        clips_per_emotion=1,
        fps=50.0,
        size=(48, 48),
        subject_streams=6.0,
    )
    assert summary["subject_streams"]["streams"] == 2
    cfg = root / "model.json"
    cfg.write_text(json.dumps({k: v for k, v in TINY.items() if k != "labels"}))
    ckpt = root / "m.safetensors"
    res = run("train", root / "data" / "casme2", "--out", ckpt, "--model-config", cfg,
              "--cnn-epochs", 1, "--head-epochs", 1, "--threads", 1)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "and 2 streams" in res.output
    res = run("convert", ckpt, "--out", root / "bundle")
    assert res.exit_code == 0, res.output
    assert "spotter    on" in res.output and "chosen on 2 training streams" in res.output
    return {"root": root, "ckpt": ckpt, "bundle": root / "bundle"}


def test_trained_on_streams_the_bundle_carries_its_spotter_and_run_uses_it(trained) -> None:
    from edge_mer.bundle import Bundle
    from edge_mer.config import config_from_args
    from edge_mer.pipeline.live import LivePipeline
    from tests.edge.test_cli import run

    manifest = Bundle.open(trained["bundle"]).manifest
    settings = manifest["spotter"]["settings"]
    assert manifest["spotter"]["chosen_on"]["synthetic_subjects"] == [[0, 0], [0, 1]]
    assert manifest["model"]["config"]["reference"] == "window-start"  # train's default
    assert manifest["model"]["config"]["pool"] == 2  # 4x4 does not fit 32x32: the largest
    # Subject 02's stream holds a macro-expression: train adds the macro class, and the
    # spotter's veto is chosen with the rest.
    assert manifest["labels"] == [*LABELS, "macro"]
    assert {"macro_veto", "hold_ms"} <= set(settings)
    uri = "synthetic://?seconds=1&fps=50&size=48x48&seed=7"
    cfg = config_from_args(trained["bundle"], uri, tables={"face": {"detector": "none"}})
    assert {k: getattr(cfg.spotter, k) for k in settings} == settings
    with LivePipeline(cfg) as p:  # what `edge-mer run` builds from this config
        assert p.spotter.on_threshold == settings["threshold_on"]
        assert p.spotter.window == settings["smoothing_frames"]
        assert p.lag_s == pytest.approx(settings["lag_frames"] / 50.0)
    # An explicit value wins; the bundle fills the other keys.
    mine = config_from_args(trained["bundle"], uri, tables={"spotter": {"threshold_on": 1.0}})
    assert mine.spotter.threshold_on == 1.0
    assert mine.spotter.threshold_off == settings["threshold_off"]
    res = run("inspect", trained["bundle"])
    assert res.exit_code == 0 and "spotter    on" in res.output
    res = run("run", "--bundle", trained["bundle"], "--source", uri, "--frames", 20)
    assert res.exit_code == 0, res.output


def test_spot_eval_refuses_the_subjects_the_spotter_was_chosen_on(trained) -> None:
    from tests.edge.test_cli import assert_bad_input, run

    res = run("spot-eval", trained["bundle"], "--seed", 0, "--subjects", 1, "--seconds", 1)
    assert_bad_input(res, "--seed 0", "(0, 0)", "training subjects")


def test_clips_only_training_still_has_no_spotter(tmp_path: Path) -> None:
    from edge_mer.convert.checkpoint import load_model
    from tests.convert.test_train import CONFIG, QUICK, clips

    result = fit(clips(["s1", "s2"]), CONFIG, options=TrainOptions(**QUICK))
    assert result.spotter is None and result.summary["streams"] == 0
    result.save(tmp_path / "c.safetensors")
    assert load_model(tmp_path / "c.safetensors").spotter is None
