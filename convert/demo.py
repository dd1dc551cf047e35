"""``edge-mer demo``: the embedded default, end to end, with no camera and no dataset.

synthetic clips and one stream per training subject -> train a tiny CNN-LSTM on both (the
spotter's settings chosen on the training streams) -> convert --int8 -> report the
verification figures, INT8 agreement and encoder latency FP32 vs INT8 -> the live pipeline
on streams of unseen subjects, its events against their ground truth.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_mer.errors import InputError

MARKER = ".edge-mer-demo"

# Small enough to train in a few minutes on 2 cores; same protocol as any user model.
# `edge-mer train`'s defaults add the window-start reference (the LSTM reads how the face
# moved since the window began, not whose face it is) and, since the training streams hold
# macro-expressions, a "macro" class the spotter counts as background (docs/spotting.md).
DEMO_MODEL = {
    "input": {
        "height": 64,
        "width": 64,
        "channels": 1,
        "fps": 50.0,
        "window": 16,
        "mean": [0.5],
        "std": [0.25],
    },
    "cnn": "small",
    "width_mult": 1.0,
    "pool": 4,  # a 4x4 grid keeps where on the face a change happens
    "feature_dim": 64,
    "rnn": "lstm",
    "layers": 1,
    "hidden": 64,
}


def prepare_dir(out: Path) -> None:
    """Create ``out``, or empty it if an earlier demo made it; refuse anything else."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists()):
            raise InputError(
                f"demo folder {str(out)!r} exists and was not made by "
                "`edge-mer demo`; pass another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by edge-mer demo; safe to delete\n")


def run_demo(
    out: Path,
    *,
    seed: int = 0,
    subjects: int = 16,
    clips_per_emotion: int = 1,
    fps: float = 200.0,
    cnn_epochs: int = 8,
    rnn_epochs: int = 20,
    subject_streams: float = 30.0,
    stream_seconds: float = 20.0,
    spot_subjects: int = 2,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole demo inside ``out``; return the bundle's manifest, the train summary,
    the clip accuracy and the spotting evaluation (``spot``: the report; ``spot_results``:
    each stream's events) on ``spot_subjects`` unseen subjects' streams."""
    from edge_mer.bench.spotting import evaluate_spotting
    from edge_mer.bundle import Bundle
    from edge_mer.calibration.evaluate import clip_windows, evaluate
    from edge_mer.calibration.spot_streams import EVAL_SEED, synthetic_streams
    from edge_mer.calibration.synth_io import synthesize
    from edge_mer.convert.pipeline import ConvertOptions, convert
    from edge_mer.convert.train import TrainOptions, train

    say = say or (lambda _m: None)
    prepare_dir(out)
    say(
        f"synthesising training clips ({subjects} subjects, {fps:g} fps) and one "
        f"{subject_streams:g} s stream per subject (50 fps)"
    )
    synthesize(
        out / "train-clips",
        subjects=subjects,
        clips_per_emotion=clips_per_emotion,
        fps=fps,
        seed=seed,
        subject_streams=subject_streams,
    )
    say("synthesising calibration clips (other subjects)")
    synthesize(out / "calib-clips", subjects=3, clips_per_emotion=2, fps=fps, seed=seed + 1000)
    ckpt = out / "demo-model.safetensors"
    summary = train(
        out / "train-clips" / "casme2",
        ckpt,
        TrainOptions(config=DEMO_MODEL, cnn_epochs=cnn_epochs, rnn_epochs=rnn_epochs, seed=seed),
        say,
    )
    manifest = convert(
        ckpt,
        out / "bundle",
        ConvertOptions(int8=True, calib=out / "calib-clips" / "casme2", name="edge-mer-demo"),
        say,
    )
    say("synthesising test clips (unseen subjects) and scoring FP32 vs INT8")
    synthesize(out / "test-clips", subjects=3, clips_per_emotion=2, fps=fps, seed=seed + 2000)
    bundle = Bundle.open(out / "bundle")
    windows, truth = clip_windows(bundle, out / "test-clips" / "casme2")
    accuracy = evaluate(bundle, windows, truth)
    say(
        f"running the live pipeline on {spot_subjects} unseen subjects' streams "
        f"({stream_seconds:g} s each, and {stream_seconds / 2:g} s distractor-only): spot-eval"
    )
    streams = synthetic_streams(
        subjects=spot_subjects,
        seconds=stream_seconds,
        seed=EVAL_SEED,
        fps=fps,
        distractor_seconds=stream_seconds / 2,
    )
    spot, results = evaluate_spotting(out / "bundle", streams, events_dir=out / "events")
    return {
        "manifest": manifest,
        "train": summary,
        "bundle": out / "bundle",
        "accuracy": accuracy,
        "spot": spot,
        "spot_results": results,
        "events_dir": out / "events",
    }
