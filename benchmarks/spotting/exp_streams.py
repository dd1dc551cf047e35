"""Synthetic streams cached at the model's input (64x64 gray, 50 fps) for the spotting
experiments (docs/spotting.md): rendering is what costs, so each stream is rendered once.

Two kinds:

- ``eval``: exactly what ``edge-mer spot-eval`` feeds the pipeline: ``synthetic://`` at
  200 fps through the live pipeline's :class:`FrameResampler` (by seconds) and
  :class:`FramePreprocessor` (full frame, face detector ``none``), for subjects
  ``(seed, 0..n-1)`` of an unseen seed; with and without micro-expressions.
- ``train``: streams of *training* subjects ``(train seed, i)`` rendered directly at 50 fps
  (4x cheaper; the same motions, onsets quantised to 20 ms), with a stream seed of their own
  so they are not the scored streams. Used to train the background class on what streams
  contain and to choose the spotter's settings.

    .venv/bin/python benchmarks/spotting/exp_streams.py eval --out CACHE --seed 50000 \\
        --subjects 5 --seconds 60
    .venv/bin/python benchmarks/spotting/exp_streams.py train --out CACHE --seed 0 \\
        --subjects 16 --seconds 60

Each stream is one ``.npz``: ``frames`` uint8 [N, 64, 64, 1], ``ts`` float64 [N] (capture
seconds of each model frame), and the ground truth: ``ev_onset``/``ev_apex``/``ev_offset``
(seconds), ``ev_kind`` (0 micro, 1 macro), ``ev_label`` (1 positive, 2 negative,
3 surprise), ``blinks`` [B, 2] (start, end seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.calibration.synth_stream import _stream_timeline
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.pipeline.resample import FrameResampler

LABELS = ["none", "positive", "negative", "surprise"]
MODEL_FPS = 50.0
SIZE = 64


def truth_arrays(tl, fps: float) -> dict[str, np.ndarray]:
    ev = [s.event for s in tl.events]
    return {
        "ev_onset": np.array([e.onset_s for e in ev]),
        "ev_apex": np.array([e.apex_s for e in ev]),
        "ev_offset": np.array([e.offset_s for e in ev]),
        "ev_kind": np.array([0 if e.kind == "micro" else 1 for e in ev], np.int64),
        "ev_label": np.array(
            [LABELS.index(MEGC3_WITH_BACKGROUND[e.emotion]) for e in ev], np.int64
        ),
        "blinks": np.array([(b[0] / fps, (b[0] + b[1]) / fps) for b in tl.blinks]).reshape(-1, 2),
    }


def render(
    seconds: float, fps: float, seed: int, subject: int, micro: bool, resample: bool
) -> dict[str, np.ndarray]:
    tl = _stream_timeline(seconds, fps, (128, 128), seed, subject, 0.5, True, micro)
    pre = FramePreprocessor(SIZE, SIZE, 1)
    rs = FrameResampler(MODEL_FPS)
    frames, ts = [], []
    for i in range(tl.frames):
        t = i / fps
        image = tl.frame(i)  # every frame: the sensor noise draws follow the stream's order
        if resample:
            ticks = rs.push(t)
            if ticks == 0:
                continue
            assert ticks == 1, "the stream is faster than the model: one tick per kept frame"
        frames.append(pre(image))
        ts.append(t)
    return {"frames": np.stack(frames), "ts": np.array(ts), **truth_arrays(tl, fps)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=("eval", "train"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--subjects", type=int, default=5)
    ap.add_argument("--first", type=int, default=0, help="first subject index")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument(
        "--distractors", action="store_true", help="train: the streams without micro-expressions"
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.first, args.first + args.subjects):
        if args.kind == "eval":
            jobs = [(True, f"eval-{args.seed}-{i}.npz"), (False, f"distr-{args.seed}-{i}.npz")]
        elif args.distractors:
            jobs = [(False, f"trdistr-{args.seed}-{i}.npz")]
        else:
            jobs = [(True, f"train-{args.seed}-{i}.npz")]
        for micro, name in jobs:
            path = args.out / name
            if path.exists():
                continue
            t0 = time.perf_counter()
            if args.kind == "eval":
                data = render(args.seconds, 200.0, args.seed, i, micro, resample=True)
            else:
                data = render(args.seconds, MODEL_FPS, args.seed, i, micro, resample=False)
            np.savez_compressed(path, **data)
            print(
                f"{name}: {len(data['ts'])} frames in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
