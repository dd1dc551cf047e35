"""Measurements behind ``edge-mer bench`` and ``benchmarks/bench_runtime.py``.

- :func:`streaming_vs_window`: per-frame cost of the streaming path (one encoder row + the
  :class:`StateCache` banks in one step call) vs re-running a whole-window graph over the
  last T frames every frame; the variants are interleaved frame by frame.
- :func:`pipeline_vs_model`: :class:`LivePipeline` fps vs model-only fps (encoder
  ``infer(1)`` + ``StateCache.step_batch`` in a tight loop on the same runner kind and
  encoder graph), in alternating chunks, with per-stage samples and a per-frame timeline.
- :class:`ReplaySynthetic` (``synthetic-replay://``, in :mod:`edge_mer.bench.replay`,
  re-exported here): the synthetic stream pre-generated once and replayed from memory.

Everything here runs on the calling thread, which owns the runners. Nothing asserts on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_mer.bench.replay import (  # noqa: F401  (re-exported: benchmarks import them here)
    _FRAMES,
    LOOP_S,
    REPLAY_SCHEME,
    ReplaySynthetic,
    pregenerated,
    replay_uri,
)
from edge_mer.bundle import Bundle
from edge_mer.config import Config
from edge_mer.pipeline.sources import SourceEnded
from edge_mer.pipeline.state_cache import StateCache, rows_per_track
from edge_mer.runners import select_runner
from edge_mer.streaming import ort_session, stream_logits

Tick = Callable[[int], None]  # called with the number of frames just done


def stage_stats(ms: Any) -> dict[str, Any]:
    """count, mean, p50, p90, p95, p99, max of millisecond samples; None values when empty."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"count": 0, **dict.fromkeys(_STAT_KEYS)}
    p = np.percentile(a, (50, 90, 95, 99))
    return {
        "count": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(p[0]),
        "p90_ms": float(p[1]),
        "p95_ms": float(p[2]),
        "p99_ms": float(p[3]),
        "max_ms": float(a.max()),
    }


_STAT_KEYS = ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")


# ---------------------------------------------------------------- streaming vs window


class Streaming:
    """One encoder row + one batched step call over the cache's banks per frame."""

    def __init__(self, bundle: Bundle, stride: int, threads: int, encoder_graph: str | None = None):
        self.window = int(bundle.input["window"])
        kind = bundle.state_kind
        sel = select_runner(
            bundle,
            "onnxruntime",
            max_batch=1,
            step_max_batch=rows_per_track(kind, self.window, stride),
            threads=threads,
            encoder_graph=encoder_graph,
        )
        self.encoder, self.step = sel.encoder, sel.step
        self.encoder.activate()
        self.step.activate()
        self.cache = StateCache(
            bundle.states, 1, step=self.step, window=self.window, stride=stride, state_kind=kind
        )
        self.logits = np.zeros(0, np.float32)
        self.ready = False

    def __call__(self, frame: np.ndarray, now: float) -> None:
        self.encoder.inputs["frames"][0] = frame
        feats = self.encoder.infer(1)["features"]
        logits, ready = self.cache.step_batch([0], feats, now=now)
        self.ready = bool(ready[0])
        if self.ready:
            self.logits = logits[0].copy()

    def close(self) -> None:
        self.encoder.deactivate()
        self.step.deactivate()


class SlidingWindow:
    """The last T frames in one ``[1, T, H, W, C]`` array, shifted by one per frame, and a
    whole-window graph run on it every frame (what research demos do). ``mode`` ``clip``
    runs ``clip.onnx``; ``stream`` runs the encoder on T rows and T step calls."""

    def __init__(self, bundle: Bundle, mode: str, threads: int) -> None:
        spec = bundle.input
        self.window = int(spec["window"])
        self.win = np.zeros(
            (1, self.window, spec["height"], spec["width"], spec["channels"]), np.uint8
        )
        self.mode = mode
        self.logits = np.zeros(0, np.float32)
        if mode == "clip":
            self.clip = ort_session(bundle.graph_path("clip"), threads)
        else:
            self.enc = ort_session(bundle.graph_path("encoder"), threads)
            self.step = ort_session(bundle.graph_path("step"), threads)
            self.names = [s.name for s in bundle.states]
            self.shapes = [tuple(s.shape) for s in bundle.states]

    def __call__(self, frame: np.ndarray, now: float) -> None:
        w = self.win[0]
        w[:-1] = w[1:]
        w[-1] = frame
        if self.mode == "clip":
            self.logits = self.clip.run(["logits"], {"clip": self.win})[0][0]
        else:
            self.logits = stream_logits(self.enc, self.step, self.win, self.names, self.shapes)[0]

    def close(self) -> None:
        pass


def variants(
    window: int, strides: tuple[int, ...] | None = None, state_kind: str = "recurrent"
) -> dict[str, dict[str, Any]]:
    """Variant name -> what it computes per frame (rows and ORT calls). ``strides``
    defaults to 1, 4 and T (those dividing T); a window model streams one row per frame
    whatever the stride, so it has only stride 1."""
    out: dict[str, dict[str, Any]] = {}
    for stride in dict.fromkeys(strides or (1, 4, window)):
        if window % stride or (state_kind == "window" and stride != 1):
            continue
        banks = rows_per_track(state_kind, window, stride)
        kind = "window state" if state_kind == "window" else f"bank{'s' * (banks > 1)}"
        out[f"stream_s{stride}"] = {
            "title": f"streaming, stride {stride} ({banks} {kind})",
            "encoder_rows": 1,
            "step_rows": banks,
            "ort_calls": 2,
            "result_every": stride,
        }
    out["window_clip"] = {
        "title": "sliding window: clip.onnx on the last T frames",
        "encoder_rows": window,
        "step_rows": window,
        "ort_calls": 1,
        "result_every": 1,
    }
    out["window_stream"] = {
        "title": "sliding window: encoder on T frames + T step calls",
        "encoder_rows": window,
        "step_rows": window,
        "ort_calls": 1 + window,
        "result_every": 1,
    }
    return out


def streaming_vs_window(
    bundle: Bundle,
    rounds: int,
    warmup: int,
    threads: int = 0,
    *,
    strides: tuple[int, ...] | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Milliseconds per frame of every :func:`variants` entry, interleaved frame by frame.

    Each round feeds the same new frame to every variant (rotated order); ``warmup`` rounds
    are untimed. Returns ``window``, ``variants`` (name -> rows/calls + median/p10/p90 ms),
    ``ratio_window_vs_streaming`` (clip-graph median / stride-1 median) and
    ``stride1_vs_clip_max_abs`` (the stride-1 logits vs clip.onnx's on the same last T
    frames; NaN with fewer than T rounds).
    """
    t = int(bundle.input["window"])
    spec = variants(t, strides, bundle.state_kind)
    runs: dict[str, Any] = {}
    try:
        for name in spec:
            if name.startswith("stream_s"):
                runs[name] = Streaming(bundle, int(name[len("stream_s") :]), threads)
            else:
                runs[name] = SlidingWindow(bundle, name.removeprefix("window_"), threads)
        shape = (bundle.input["height"], bundle.input["width"], bundle.input["channels"])
        pool = np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)
        fps = float(bundle.input["fps"])
        names = list(runs)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(warmup + rounds):
            frame, now = pool[r % len(pool)], r / fps
            k0 = r % len(names)
            for k in names[k0:] + names[:k0]:
                t0 = time.perf_counter()
                runs[k](frame, now)
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[k].append(dt)
            if tick is not None:
                tick(1)
        s1, clip = runs["stream_s1"], runs["window_clip"]
        diff = float(np.abs(s1.logits - clip.logits).max()) if s1.ready else float("nan")
    finally:
        for run in runs.values():
            run.close()
    out: dict[str, Any] = {"window": t, "rounds": rounds, "variants": {}}
    for k, ts in times.items():
        ms = np.asarray(ts) * 1e3
        out["variants"][k] = {
            **spec[k],
            "median_ms": float(np.median(ms)),
            "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
        }
    v = out["variants"]
    out["ratio_window_vs_streaming"] = v["window_clip"]["median_ms"] / v["stream_s1"]["median_ms"]
    out["stride1_vs_clip_max_abs"] = diff
    return out


# ---------------------------------------------------------------- pipeline vs model-only


def pipeline_vs_model(
    config: Config,
    *,
    frames: int,
    warmup: int,
    chunks: int = 4,
    encoder_graph: str | None = None,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """:class:`LivePipeline` fps vs model-only fps, ``frames`` timed frames of each in
    ``chunks`` alternating chunks, after ``warmup`` untimed frames of each.

    Model-only is encoder ``infer(1)`` + ``StateCache.step_batch`` (stride 1, as the
    pipeline) on its own runners of the pipeline's kind and encoder graph, fed random
    preprocessed frames. Returns fps figures (median over chunks), ``efficiency``
    (pipeline fps / model-only fps), ``stages`` (``StageClock.summary(samples=True)`` plus
    ``capture_to_probs``: each frame's time from leaving the ring to its probabilities and
    sinks, and ``end_to_end``: the events' capture-to-event ``latency_ms``), ``timeline``
    (``t_s`` since the first timed frame, ``frame_ms`` per frame), capture ``dropped``,
    ``events`` and whether the source ended early.
    """
    from edge_mer.pipeline.live import LivePipeline, StageClock

    if frames < 1 or warmup < 0 or chunks < 1:
        raise ValueError(f"frames {frames!r} >= 1, warmup {warmup!r} >= 0, chunks {chunks!r} >= 1")
    chunks = min(chunks, frames)
    sizes = [frames // chunks + (i < frames % chunks) for i in range(chunks)]
    with LivePipeline(config, encoder_graph=encoder_graph) as pipe:
        ended = _run_frames(pipe, warmup, None, tick)
        b = pipe.bundle
        window = int(b.input["window"])
        sel = select_runner(
            b,
            pipe.selection.kind,
            max_batch=1,
            step_max_batch=rows_per_track(b.state_kind, window),
            engines_dir=config.model.engines_dir,
            threads=config.model.threads,
            encoder_graph=encoder_graph,
        )
        with sel.encoder as enc, sel.step as step:
            cache = StateCache(b.states, 1, step=step, window=window, state_kind=b.state_kind)
            frames_in = enc.inputs["frames"]
            pool = np.random.default_rng(1).integers(
                0, 256, (64, *frames_in.shape[1:]), dtype=frames_in.dtype
            )
            fps = float(b.input["fps"])
            i = 0

            def model_only(n: int) -> float:
                nonlocal i
                t0 = time.perf_counter()
                for _ in range(n):
                    frames_in[0] = pool[i % 64]
                    feats = enc.infer(1)["features"]
                    cache.step_batch([0], feats, now=i / fps)
                    i += 1
                return time.perf_counter() - t0

            model_only(warmup)
            if tick is not None:
                tick(warmup)
            pipe.clock = StageClock(keep=frames + 16)
            drops0, events0 = pipe.capture.stats().drops, pipe.events
            timeline = _Timeline(frames, time.perf_counter())
            pipe_fps: list[float] = []
            model_fps: list[float] = []
            for n in sizes:
                if ended:
                    break
                m0, t0 = pipe.model_frames, time.perf_counter()
                ended = _run_frames(pipe, n, timeline, tick)
                dt = time.perf_counter() - t0
                if pipe.model_frames > m0:
                    pipe_fps.append((pipe.model_frames - m0) / dt)
                model_fps.append(n / model_only(n))
                if tick is not None:
                    tick(n)
        clock = pipe.clock.summary(samples=True)
        dropped = pipe.capture.stats().drops - drops0
        events = pipe.events - events0
        records = list(pipe.records)[-events:] if events > 0 else []
        model_frames = pipe.model_frames
        kind = pipe.selection.kind
        precision = pipe.encoder.precision
        threads = {  # ONNX Runtime's intra-op threads (0 = its default); None for TensorRT
            "encoder": getattr(pipe.encoder, "threads", None),
            "step": getattr(pipe.step, "threads", None),
        }
    waits = clock.get("capture", {}).get("samples_ms", [])
    per_frame = [
        total - wait
        for total, got, wait in zip(timeline.frame_ms, timeline.reached, waits, strict=False)
        if got
    ]
    stages: dict[str, Any] = dict(clock)
    stages["capture_to_probs"] = {**stage_stats(per_frame), "samples_ms": per_frame}
    lat = [float(r["latency_ms"]) for r in records if "latency_ms" in r]
    stages["end_to_end"] = {**stage_stats(lat), "samples_ms": lat}
    p = float(np.median(pipe_fps)) if pipe_fps else 0.0
    m = float(np.median(model_fps)) if model_fps else 0.0
    return {
        "runner": kind,
        "encoder_precision": precision,
        "threads": threads,
        "frames": timeline.n,
        "warmup_frames": warmup,
        "chunks": len(model_fps),
        "model_frames": model_frames,
        "pipeline_fps": p,
        "model_only_fps": m,
        "model_only_ms_per_frame": 1e3 / m if m else None,
        "pipeline_fps_chunks": pipe_fps,
        "model_only_fps_chunks": model_fps,
        "efficiency": p / m if m else None,
        "dropped": int(dropped),
        "events": int(events),
        "source_ended": bool(ended),
        "stages": stages,
        "timeline": {"t_s": timeline.t_s.tolist(), "frame_ms": timeline.frame_ms.tolist()},
    }


class _Timeline:
    """Per-frame wall times of the timed pipeline frames, in arrays allocated up front so
    that recording a frame costs the loop two stores, not list growth."""

    def __init__(self, frames: int, start: float) -> None:
        self.start, self.n = start, 0
        self._t = np.zeros(frames)
        self._ms = np.zeros(frames)
        self._reached = np.zeros(frames, bool)

    def add(self, t0: float, t1: float, reached: bool) -> None:
        i = self.n
        self._t[i] = t1 - self.start
        self._ms[i] = (t1 - t0) * 1e3
        self._reached[i] = reached
        self.n = i + 1

    @property
    def t_s(self) -> np.ndarray:
        return self._t[: self.n]

    @property
    def frame_ms(self) -> np.ndarray:
        """Each frame's ``run_frame`` time (ms), the wait for it included."""
        return self._ms[: self.n]

    @property
    def reached(self) -> np.ndarray:
        """Whether the frame reached the model (the resampler may skip frames)."""
        return self._reached[: self.n]


def _run_frames(pipe: Any, n: int, timeline: _Timeline | None, tick: Tick | None) -> bool:
    """Feed ``n`` frames through ``pipe``; True if the source ended first. Each frame's wall
    time goes to ``timeline``. ``tick`` hears of the frames every 64 (the model-only loop it
    is compared with has no per-frame hook either)."""
    perf = time.perf_counter
    done = ticked = 0
    try:
        while done < n:
            m0 = pipe.model_frames
            t0 = perf()
            try:
                got = pipe.run_frame(0.25)
            except SourceEnded:
                return True
            t1 = perf()
            if not got:
                continue
            done += 1
            if timeline is not None:
                timeline.add(t0, t1, pipe.model_frames > m0)
            if tick is not None and done - ticked >= 64:
                tick(done - ticked)
                ticked = done
    finally:
        if tick is not None and done > ticked:
            tick(done - ticked)
    return False
