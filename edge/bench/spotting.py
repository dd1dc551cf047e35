"""Spotting evaluation: a bundle's live events against ground truth, on whole streams.

Each :class:`SpotStream` (a source URI the live pipeline reads, and its ground-truth
intervals) runs through the real :class:`~edge_mer.pipeline.live.LivePipeline` (resampling,
face stage, encoder, state cache, spotter) exactly as ``edge-mer run`` does. The events are
then scored the MEGC way (:mod:`edge_mer.pipeline.spotting_eval`): interval IoU >= 0.5, one
match per ground-truth event, precision / recall / F1 from TP, FP and FN summed over every
stream. Streams that carry no micro-expression (``distractors_only``) give the false alarms
per minute: every micro-expression event on them is one.

Latency comes in two figures: ``processing`` is DESIGN §6's ``latency_ms`` (emission minus
the capture of the frame that closed the event), ``detection_delay`` is emission minus the
ground-truth offset of the matched micro-expression (what a user waits after the face has
stopped moving), both on the capture clock.

The probabilities the spotter saw are recorded (:class:`ProbabilityTrace`), so other
spotter settings can be scored offline with :func:`replay` without running the model again.

Streams come from anywhere: :func:`edge_mer.calibration.spot_streams.synthetic_streams` makes
synthetic ones of unseen subjects; a long-video dataset (CAS(ME)^2, SAMM-LV) becomes one
``frames://`` or ``file://`` stream per video with its coded intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.config import Config, config_from_args
from edge_mer.config.bundle_spotter import manifest_spotter, spotter_origins
from edge_mer.config.models import SpotterConfig
from edge_mer.errors import InputError
from edge_mer.pipeline.spotter import MICRO, Event, Spotter, spotter_from_config
from edge_mer.pipeline.spotting_eval import SpottingScore, match_events, score_events

__all__ = [
    "ProbabilityTrace",
    "SpotStream",
    "StreamResult",
    "TruthEvent",
    "evaluate_spotting",
    "replay",
    "run_stream",
    "spotter_from_config",
    "summarize",
]

KINDS = ("micro", "macro")


@dataclass(frozen=True)
class TruthEvent:
    """One coded expression. Seconds on the stream's capture clock; ``offset_s`` is the
    time of the last frame of the expression."""

    onset_s: float
    offset_s: float
    kind: str  # "micro" | "macro"
    label: str | None = None  # the model's label for it (e.g. "positive"), if known

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"ground-truth kind {self.kind!r} is not one of {KINDS}")
        if not (math.isfinite(self.onset_s) and self.offset_s >= self.onset_s):
            raise InputError(
                f"ground-truth interval ({self.onset_s!r}, {self.offset_s!r}): need "
                "onset <= offset, finite seconds"
            )


@dataclass(frozen=True)
class SpotStream:
    """A stream to score: what the pipeline reads, and what is in it.

    Attributes:
        name: how reports name it (e.g. ``subject 50000/0``, ``casme2/s15/15_0101``).
        uri: the source URI (``synthetic://...``, ``frames://dir``, ``file://video.mp4``).
        truth: every coded expression of the stream (micro and macro).
        seconds: the length scored; events or truth beyond it are ignored.
        face: the face detector for this source (``none`` when frames are face crops).
        distractors_only: True when the stream holds no micro-expression by construction;
            its micro events count as false alarms per minute.
    """

    name: str
    uri: str
    truth: tuple[TruthEvent, ...]
    seconds: float
    face: str = "none"
    distractors_only: bool = False


class ProbabilityTrace:
    """Records every ``update`` call of a :class:`Spotter` (track, capture time as passed,
    class probabilities) in growing arrays: install :meth:`record` as the spotter's ``tap``
    (the live pipeline's spotter stays the pipeline's own, compiled or not), or call
    :meth:`update`, which records and delegates. Anything else is the wrapped spotter's.
    Recording copies the probabilities (the pipeline reuses its buffer).
    """

    def __init__(self, spotter: Spotter, lag_s: float, capacity: int = 4096) -> None:
        self.spotter = spotter
        self.lag_s = float(lag_s)  # how far the pipeline dated each ts back
        self._ts = np.zeros(capacity, np.float64)
        self._probs = np.zeros((capacity, len(spotter.labels)), np.float32)
        self._tracks: list[Hashable] = []
        self.n = 0

    def update(self, track: Hashable, ts: float, probs: np.ndarray) -> list[Event]:
        self.record(track, ts, probs)
        return self.spotter.update(track, ts, probs)

    def record(self, track: Hashable, ts: float, probs: Any) -> None:
        """Keep one call's arguments (what the spotter's ``tap`` is given)."""
        n = self.n
        if n == len(self._ts):
            self._ts = np.concatenate([self._ts, np.zeros_like(self._ts)])
            self._probs = np.concatenate([self._probs, np.zeros_like(self._probs)])
        self._ts[n] = ts
        self._probs[n] = probs
        self._tracks.append(track)
        self.n = n + 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spotter, name)

    @property
    def labels(self) -> list[str]:
        return self.spotter.labels

    @property
    def ts(self) -> np.ndarray:
        """float64 [N]: the times passed to the spotter (capture time minus ``lag_s``)."""
        return self._ts[: self.n]

    @property
    def probs(self) -> np.ndarray:
        """float32 [N, K]: the class probabilities, in the bundle's label order."""
        return self._probs[: self.n]

    @property
    def tracks(self) -> list[Hashable]:
        return self._tracks


def lag_seconds(sp: SpotterConfig, window: int, fps: float) -> float:
    """How far the live pipeline dates events back (``spotter.lag_frames``, default T/4)."""
    lag = sp.lag_frames if sp.lag_frames is not None else window // 4
    return lag / fps


@dataclass
class StreamResult:
    """One stream's run: its events (DESIGN §6 records) and the probabilities behind them."""

    stream: SpotStream
    records: list[dict[str, Any]]
    trace: ProbabilityTrace | None = None
    frames: int = 0
    model_frames: int = 0
    model_fps: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def make_config(
    bundle: str | Path,
    stream: SpotStream,
    *,
    spotter: Mapping[str, Any] | None = None,
    runner: str = "auto",
    events: Path | None = None,
) -> Config:
    """The ``edge-mer run`` config for one stream; ``spotter`` overrides ``[spotter]`` keys
    (unknown keys and bad values are refused with the key named)."""
    tables: dict[str, dict[str, Any]] = {
        "face": {"detector": stream.face},
        "metrics": {"enabled": False},
    }
    if spotter:
        tables["spotter"] = dict(spotter)
    return config_from_args(
        bundle, stream.uri, events=events, stdout=False, runner=runner, tables=tables
    )


def run_stream(
    bundle: str | Path,
    stream: SpotStream,
    *,
    spotter: Mapping[str, Any] | None = None,
    runner: str = "auto",
    encoder_graph: str | None = None,
    events: Path | None = None,
) -> StreamResult:
    """Run ``stream`` to its end (or ``stream.seconds``) through :class:`LivePipeline`."""
    from edge_mer.pipeline.live import LivePipeline, run_until

    cfg = make_config(bundle, stream, spotter=spotter, runner=runner, events=events)
    with LivePipeline(cfg, encoder_graph=encoder_graph) as pipeline:
        trace = ProbabilityTrace(pipeline.spotter, pipeline.lag_s)
        pipeline.spotter.tap = trace.record
        src_fps = getattr(pipeline.source, "fps", None)
        limit = round(stream.seconds * src_fps) if src_fps else None
        why = run_until(pipeline, frames=limit)
    return StreamResult(
        stream,
        list(pipeline.records),
        trace,
        frames=pipeline.frames,
        model_frames=pipeline.model_frames,
        model_fps=pipeline.model_fps,
        extra={
            "runner": pipeline.selection.kind,
            "precision": getattr(pipeline.encoder, "precision", None),
            "stopped": why,
            "stages": pipeline.clock.summary(),
        },
    )


def replay(
    trace: ProbabilityTrace,
    labels: Sequence[str],
    fps: float,
    window: int,
    settings: SpotterConfig,
) -> list[dict[str, Any]]:
    """The events a pipeline with spotter ``settings`` would have emitted from the same
    probabilities (same model, same frames): a fresh :class:`Spotter` fed the recorded
    calls, re-dated for the new ``lag_frames``. Records as DESIGN §6, with ``emitted_ts``
    the closing frame's capture time (no processing time: there was none)."""
    spotter = spotter_from_config(labels, fps, settings)
    shift = trace.lag_s - lag_seconds(settings, window, fps)
    records = []

    def add(ev: Event) -> None:
        closing = ev.closing_ts + trace.lag_s
        records.append(ev.to_record("replay", "", "", closing, closing))

    for track, ts, probs in zip(trace.tracks, trace.ts, trace.probs, strict=True):
        for ev in spotter.update(track, float(ts) + shift, probs):
            add(ev)
    for ev in spotter.flush():
        add(ev)
    return records


def _intervals(items: Iterable[Any], kind: str, seconds: float) -> list[tuple[float, float, Any]]:
    return [
        (t.onset_s, t.offset_s, t.label) for t in items if t.kind == kind and t.onset_s < seconds
    ]


def score_stream(
    stream: SpotStream, records: Sequence[Mapping[str, Any]], iou: float = 0.5
) -> dict[str, Any]:
    """Counts for one stream: micro TP/FP/FN (IoU >= ``iou``), event counts, and the
    detection delay (ms) of each matched micro-expression."""
    seconds = stream.seconds
    micro_ev = [r for r in records if r["type"] == MICRO and float(r["onset_ts"]) < seconds]
    pred = [(float(r["onset_ts"]), float(r["offset_ts"]), r["label"]) for r in micro_ev]
    truth = _intervals(stream.truth, "micro", seconds)
    score = score_events(pred, truth, iou)
    _, _, _, pairs = match_events(pred, truth, iou)
    delays = [(float(micro_ev[i]["emitted_ts"]) - truth[j][1]) * 1000.0 for i, j, _ in pairs]
    return {
        "name": stream.name,
        "seconds": seconds,
        "distractors_only": stream.distractors_only,
        "truth_micro": len(truth),
        "truth_macro": len(_intervals(stream.truth, "macro", seconds)),
        "events_micro": len(micro_ev),
        "events_macro": sum(1 for r in records if r["type"] != MICRO),
        **score.as_dict(),
        "label_correct": score.label_correct,
        "label_total": score.label_total,
        "detection_delay_ms": delays,
        "processing_ms": [float(r["latency_ms"]) for r in micro_ev],
    }


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "count": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
    }


def summarize(per_stream: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool per-stream counts (:func:`score_stream`): micro precision / recall / F1 from the
    summed TP/FP/FN of the streams with micro-expressions, false alarms per minute over the
    distractor-only streams, latency over every matched event."""
    scored = [s for s in per_stream if not s["distractors_only"]]
    pooled = SpottingScore()
    for s in scored:
        pooled = pooled + SpottingScore(
            s["tp"], s["fp"], s["fn"], s["label_correct"], s["label_total"]
        )
    distractor = [s for s in per_stream if s["distractors_only"]]
    minutes = sum(s["seconds"] for s in distractor) / 60.0
    false_alarms = sum(s["events_micro"] for s in distractor)
    f1s = [s["f1"] for s in scored]
    return {
        "micro": {
            **pooled.as_dict(),
            "streams": len(scored),
            "truth": sum(s["truth_micro"] for s in scored),
            "events": sum(s["events_micro"] for s in scored),
            "f1_min": min(f1s) if f1s else None,
            "f1_max": max(f1s) if f1s else None,
        },
        "distractors": {
            "streams": len(distractor),
            "minutes": minutes,
            "false_alarms": false_alarms,
            "false_alarms_per_minute": false_alarms / minutes if minutes else None,
            "macro_events": sum(s["events_macro"] for s in distractor),
            "truth_macro": sum(s["truth_macro"] for s in distractor),
        },
        "latency": {
            "detection_delay": _stats([d for s in scored for d in s["detection_delay_ms"]]),
            "processing": _stats([d for s in per_stream for d in s["processing_ms"]]),
        },
    }


Progress = Callable[[int, int, str], None]


def evaluate_spotting(
    bundle: str | Path,
    streams: Sequence[SpotStream],
    *,
    spotter: Mapping[str, Any] | None = None,
    runner: str = "auto",
    encoder_graph: str | None = None,
    iou: float = 0.5,
    events_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[StreamResult]]:
    """Run every stream through the live pipeline and score it.

    Returns (report, results): the report is JSON-able (``bundle``, ``spotter`` settings
    used, ``iou``, ``streams`` per-stream counts, and :func:`summarize`'s ``micro``,
    ``distractors``, ``latency``); results keep each stream's records and trace.
    ``events_dir`` also writes each stream's events as ``<index>.jsonl`` there.
    """
    from edge_mer.bundle import Bundle

    if not streams:
        raise InputError("spotting evaluation needs at least one stream")
    if not 0.0 < iou <= 1.0:
        raise InputError(f"iou={iou!r}: must be in (0, 1]")
    b = Bundle.open(bundle)
    cfg = make_config(bundle, streams[0], spotter=spotter, runner=runner)  # fail early
    if events_dir is not None:
        events_dir.mkdir(parents=True, exist_ok=True)
    results, per_stream = [], []
    for i, stream in enumerate(streams):
        if progress is not None:
            progress(i, len(streams), stream.name)
        events = events_dir / f"{i:03d}.jsonl" if events_dir is not None else None
        res = run_stream(
            bundle,
            stream,
            spotter=spotter,
            runner=runner,
            encoder_graph=encoder_graph,
            events=events,
        )
        results.append(res)
        per_stream.append(score_stream(stream, res.records, iou))
    if progress is not None:
        progress(len(streams), len(streams), "done")
    report = {
        "bundle": {"name": b.name, "path": str(bundle), "manifest_sha256": b.manifest_sha256},
        "runner": results[0].extra.get("runner"),
        "encoder_graph": encoder_graph,
        "precision": results[0].extra.get("precision"),
        "spotter": cfg.spotter.model_dump(mode="json"),
        "spotter_origin": spotter_origins(
            set(spotter or {}), manifest_spotter(b.manifest, str(Path(bundle) / "manifest.json"))
        ),
        "lag_s": results[0].trace.lag_s if results[0].trace is not None else None,
        "iou": iou,
        "streams": per_stream,
        **summarize(per_stream),
    }
    return report, results
