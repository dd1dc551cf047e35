"""The spotter's settings, chosen on the training streams at the end of training.

For each training stream the model classifies every window of T frames (the clip over the
last T frames from zero state, exactly what the device's state cache yields at each model
frame), and :func:`edge_mer.bench.spot_tune.choose_spotter` replays those probabilities
through the real spotter for every setting of its grid. The result rides in the checkpoint's
metadata and ``edge-mer convert`` writes it into the manifest (``spotter``): it was chosen
on the training subjects only, never on the streams a bundle is scored on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_mer.convert.train_model import classifier
from edge_mer.convert.train_streams import TrainStream
from edge_mer.pipeline.spotter import MACRO_LABEL

__all__ = ["SETTING_KEYS", "tune_spotter", "window_probs"]

# The [spotter] keys the choice sets (the others keep their defaults).
VETO_KEYS = ("macro_veto", "hold_ms")  # with a macro class
SETTING_KEYS = (
    "threshold_on",
    "threshold_off",
    "smoothing_frames",
    "lag_frames",
    "min_duration_ms",
)


def window_probs(model: nn.Module, feats: torch.Tensor, t: int, chunk: int = 2048) -> np.ndarray:
    """Class probabilities ``[N - t + 1, K]`` of the windows ending at frames ``t - 1 ..``
    of a sequence's cached features ``[N, D]``."""
    classify = classifier(model)
    windows = feats.unfold(0, t, 1).permute(0, 2, 1)  # [N - t + 1, t, D]
    with torch.no_grad():
        logits = torch.cat(
            [classify(windows[i : i + chunk]) for i in range(0, len(windows), chunk)]
        )
    return torch.softmax(logits, dim=1).numpy()


def tune_spotter(
    model: nn.Module,
    feats: Sequence[torch.Tensor],
    streams: Sequence[TrainStream],
    labels: list[str],
    spec: dict[str, Any],
) -> dict[str, Any]:
    """The best grid setting on ``streams`` (features ``feats``, one tensor per stream), as
    the manifest records it: ``{"settings": {...}, "chosen_on": {...}}``."""
    from edge_mer.bench.spot_tune import (
        GRID,
        VETO_GRID,
        RecordedTrace,
        choose_spotter,
        grid_settings,
        veto_settings,
    )
    from edge_mer.bench.spotting import SpotStream, TruthEvent

    started = time.perf_counter()
    t, fps = int(spec["window"]), float(spec["fps"])
    was = model.training
    model.eval()
    recorded = []
    for s, f in zip(streams, feats, strict=True):
        if len(s.frames) < t:
            continue
        truth = tuple(
            TruthEvent(e.onset / fps, e.offset / fps, e.kind, e.label)
            for e in s.events
            if e.kind in ("micro", "macro")
        )
        stream = SpotStream(s.name or s.subject, "training", truth, len(s.frames) / fps)
        trace = RecordedTrace.of_windows(window_probs(model, f, t), fps, t, t // 4)
        recorded.append((stream, trace))
    model.train(was)
    settings = grid_settings(t)
    best, micro = choose_spotter(recorded, labels, fps, t, settings)
    chosen = best.model_dump(mode="json")
    keys = SETTING_KEYS + (VETO_KEYS if MACRO_LABEL in labels else ())
    grid = {**GRID, **(VETO_GRID if MACRO_LABEL in labels else {})}
    return {
        "settings": {k: chosen[k] for k in keys},
        "chosen_on": {
            "what": "training streams (the training subjects), best pooled micro-expression "
            "F1 at IoU 0.5 over a grid",
            "streams": len(recorded),
            "subjects": sorted({s.subject for s in streams}),
            "synthetic_subjects": sorted({tuple(s.synthetic) for s in streams if s.synthetic}),
            "seconds": round(sum(len(s.frames) for s in streams) / fps, 3),
            "grid": {k: list(v) for k, v in grid.items()},
            "settings_tried": len(settings)
            + (len(veto_settings(best)) if VETO_KEYS[0] in keys else 0),
            "f1": round(float(micro.get("f1", 0.0)), 4),
            "precision": round(float(micro.get("precision", 0.0)), 4),
            "recall": round(float(micro.get("recall", 0.0)), 4),
            "tp_fp_fn": [micro.get("tp", 0), micro.get("fp", 0), micro.get("fn", 0)],
            "seconds_to_choose": round(time.perf_counter() - started, 1),
        },
    }
