"""The bundle's graphs run as the device runs them, in ONNX Runtime (CPU).

The encoder runs once per frame; the step graph carries the recurrent state from frame
to frame, from zeros. This is the reference the on-device state cache must equal, and
what conversion checks against the clip graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def ort_session(path: Path, threads: int = 0) -> Any:
    """A CPU ONNX Runtime session for ``path`` with warnings silenced."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def stream_logits(
    encoder: Any,
    step: Any,
    clips: np.ndarray,
    state_names: Sequence[str],
    state_shapes: Sequence[tuple[int, ...]],
) -> np.ndarray:
    """Logits ``[N, K]`` after the last frame of each clip.

    Args:
        encoder, step: ONNX Runtime sessions of ``encoder*.onnx`` and ``step.onnx``.
        clips: uint8 ``[N, T, H, W, C]``.
        state_names, state_shapes: the manifest's states (shapes without the batch axis).
    """
    n, t = clips.shape[:2]
    feats = encoder.run(["features"], {"frames": clips.reshape(n * t, *clips.shape[2:])})[0]
    feats = feats.reshape(n, t, -1)
    states = {
        s: np.zeros((n, *shape), np.float32)
        for s, shape in zip(state_names, state_shapes, strict=True)
    }
    out_names = ["logits", *(f"{s}_next" for s in state_names)]
    logits = np.zeros((n, 0), np.float32)
    for i in range(t):
        res = step.run(out_names, {"features": np.ascontiguousarray(feats[:, i]), **states})
        logits = res[0]
        states = dict(zip(state_names, res[1:], strict=True))
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, K]`` logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
