"""Accuracy of a bundle on coded clips, in the field's metrics, run the way the device runs.

Each clip gives one window of ``input.window`` frames at the model's fps: for a coded
micro-expression, the window whose last frame lies a quarter window after the apex (the
trainer's windows end between the apex and the offset); for a background clip, its last
window. The window runs through the bundle's encoder once per frame and the step graph
over time, from zero state, exactly as the state cache does on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.calibration.labels import MEGC3_WITH_BACKGROUND
from edge_mer.calibration.readers import discover_clips
from edge_mer.errors import DataError
from edge_mer.metrics import confusion, scores
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.streaming import ort_session, stream_logits


def clip_windows(
    bundle: Bundle, root: Path, label_map: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 windows ``[M, T, H, W, C]`` and their label indices ``[M]`` from coded clips."""
    label_map = label_map or MEGC3_WITH_BACKGROUND
    spec = bundle.input
    window, fps = spec["window"], float(spec["fps"])
    pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
    xs, ys = [], []
    for src in discover_clips(Path(root)):
        coded = src.coded
        if coded is None:
            continue
        name = label_map.get(coded.canonical_emotion, coded.canonical_emotion)
        if name not in bundle.labels:
            continue
        frames = src.load(pre, fps=fps)
        n = len(frames)
        if n < window:
            frames = np.concatenate([frames, np.repeat(frames[-1:], window - n, axis=0)])
            n = window
        if coded.apex is None and name == "none":
            last = n - 1
        else:
            apex = (
                coded.apex_index
                if coded.apex is not None
                else ((coded.onset_index + coded.offset_index) // 2)
            )
            last = round(apex * fps / coded.fps) + window // 4
            last = min(n - 1, max(window - 1, last))
        xs.append(frames[last - window + 1 : last + 1])
        ys.append(bundle.labels.index(name))
    if not xs:
        raise DataError(f"no coded clips with labels {bundle.labels} in {str(root)!r}")
    return np.stack(xs), np.asarray(ys)


def evaluate(
    bundle: Bundle,
    windows: np.ndarray,
    truth: np.ndarray,
    encoders: tuple[str, ...] = ("encoder", "encoder_int8"),
) -> dict[str, Any]:
    """UF1/UAR/accuracy and confusion per encoder graph (those the bundle has)."""
    step = ort_session(bundle.graph_path("step"))
    names = [s.name for s in bundle.states]
    shapes = [s.shape for s in bundle.states]
    k = len(bundle.labels)
    out: dict[str, Any] = {"windows": len(windows)}
    for graph in encoders:
        if graph not in bundle.manifest["graphs"]:
            continue
        enc = ort_session(bundle.graph_path(graph))
        logits = np.concatenate(
            [
                stream_logits(enc, step, windows[i : i + 16], names, shapes)
                for i in range(0, len(windows), 16)
            ]
        )
        pred = logits.argmax(1)
        out[graph] = {**scores(truth, pred, k), "confusion": confusion(truth, pred, k).tolist()}
    return out
