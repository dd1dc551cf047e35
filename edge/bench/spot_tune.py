"""Choosing the spotter's settings on training-side streams (never on the scored ones).

The trainer records, for each of its training streams, the class probabilities the live
pipeline would give the spotter (the clip over the last T frames at every model frame,
which the state cache reproduces exactly), and :func:`choose_spotter` replays them through
the real :class:`~edge_mer.pipeline.spotter.Spotter` for every setting of :data:`GRID`,
scoring each the MEGC way (:func:`~edge_mer.bench.spotting.score_stream`). The best pooled
micro-expression F1 (ties: fewer false positives, then the earlier setting) wins; the
bundle's manifest carries it (``spotter``) and ``edge-mer run`` / ``spot-eval`` / ``bench``
use it unless a config or flag says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_mer.bench.spotting import SpotStream, replay, score_stream, summarize
from edge_mer.config.models import SpotterConfig
from edge_mer.pipeline.spotter import MACRO_LABEL

__all__ = [
    "GRID",
    "VETO_GRID",
    "RecordedTrace",
    "choose_spotter",
    "grid_settings",
    "tuned_on_subjects",
    "veto_settings",
]

# threshold_off is a share of threshold_on; lag_frames is relative to T // 4.
GRID: dict[str, list[Any]] = {
    "threshold_on": [0.3, 0.5, 0.7, 0.8, 0.9, 0.95],
    "off_ratio": [0.5, 0.75],
    "smoothing_frames": [3, 5, 7],
    "lag_offset": [-1, 0, 1],
    "min_duration_ms": [40, 80],
}


# Second stage, for models with a macro class: the veto, with the first stage's best.
VETO_GRID: dict[str, list[Any]] = {
    "macro_veto": [1.0, 0.95, 0.9, 0.8, 0.7, 0.5],
    "hold_ms": [0, 60, 120, 200],
}


@dataclass
class RecordedTrace:
    """What :func:`~edge_mer.bench.spotting.replay` needs of a recorded run: the times the
    spotter was given (capture time minus ``lag_s``), the probabilities, one track."""

    ts: np.ndarray  # float64 [N]
    probs: np.ndarray  # float [N, K]
    lag_s: float

    @property
    def tracks(self) -> list[Hashable]:
        return [0] * len(self.ts)

    @classmethod
    def of_windows(
        cls, probs: np.ndarray, fps: float, window: int, lag_frames: int
    ) -> RecordedTrace:
        """Probabilities of the windows ending at frames ``window - 1 ..`` of a stream whose
        frame k was captured at ``k / fps``, dated back ``lag_frames`` as the pipeline does."""
        ends = np.arange(window - 1, window - 1 + len(probs), dtype=np.float64)
        lag_s = lag_frames / fps
        return cls(ends / fps - lag_s, np.asarray(probs), lag_s)


def grid_settings(window: int) -> list[SpotterConfig]:
    """Every setting of :data:`GRID` for a model of ``window`` frames."""
    out = []
    for on, ratio, k, lag, min_ms in itertools.product(*GRID.values()):
        out.append(
            SpotterConfig(
                threshold_on=on,
                threshold_off=round(on * ratio, 4),
                smoothing_frames=k,
                lag_frames=max(0, window // 4 + lag),
                min_duration_ms=min_ms,
            )
        )
    return out


def veto_settings(base: SpotterConfig) -> list[SpotterConfig]:
    """``base`` with every ``macro_veto`` x ``hold_ms`` of :data:`VETO_GRID` (no veto first,
    so that a tie keeps it)."""
    return [
        base.model_copy(update={"macro_veto": v, "hold_ms": h})
        for v, h in itertools.product(*VETO_GRID.values())
        if v < 1.0 or h == 0
    ]


def choose_spotter(
    streams: Sequence[tuple[SpotStream, RecordedTrace]],
    labels: Sequence[str],
    fps: float,
    window: int,
    settings: Sequence[SpotterConfig] | None = None,
) -> tuple[SpotterConfig, dict[str, Any]]:
    """The setting with the best pooled micro F1 on ``streams`` and its pooled figures
    (:func:`~edge_mer.bench.spotting.summarize`'s ``micro``). With a ``macro`` label the
    veto is then chosen the same way, for the best setting (:func:`veto_settings`)."""
    best, micro = _best(streams, labels, fps, window, settings or grid_settings(window))
    if MACRO_LABEL in labels:
        best, micro = _best(streams, labels, fps, window, veto_settings(best))
    return best, micro


def _best(
    streams: Sequence[tuple[SpotStream, RecordedTrace]],
    labels: Sequence[str],
    fps: float,
    window: int,
    settings: Sequence[SpotterConfig],
) -> tuple[SpotterConfig, dict[str, Any]]:
    best_key: tuple[float, int] | None = None
    best, best_micro = SpotterConfig(), {}
    for cfg in settings:
        per = [
            score_stream(stream, replay(trace, labels, fps, window, cfg))  # type: ignore[arg-type]
            for stream, trace in streams
        ]
        micro = summarize(per)["micro"]
        key = (round(micro["f1"], 9), -micro["fp"])
        if best_key is None or key > best_key:
            best_key, best, best_micro = key, cfg, micro
    return best, best_micro


def tuned_on_subjects(manifest: dict[str, Any]) -> set[tuple[int, int]]:
    """The synthetic subjects ``(seed, index)`` a bundle's spotter was chosen on (its
    training subjects): a spotting evaluation must not score it on them."""
    block = manifest.get("spotter") or {}
    chosen = block.get("chosen_on") if isinstance(block, dict) else None
    pairs = (chosen or {}).get("synthetic_subjects") or []
    return {(int(p[0]), int(p[1])) for p in pairs if isinstance(p, (list, tuple)) and len(p) == 2}
