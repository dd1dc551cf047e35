"""The on-device frame loop (DESIGN §4), one frame at a time, on one thread.

capture thread -> ring (drop-oldest) -> resample to the model's fps (by seconds) -> face
stage (crops locked per window) -> crop resized straight into the encoder runner's input
buffer -> encoder (once per frame per face) -> state cache (banked, equals the clip graph
on the last ``window`` frames) -> spotter (causal events) -> sinks + metrics. Finite
sources (files, frame folders, synthetic streams) are read on the loop's own thread instead
of through a capture thread and ring (:mod:`edge_mer.pipeline.inline`).

The thread that calls :meth:`LivePipeline.run_frame` owns the runners (and, with
TensorRT, the CUDA context); other threads only read counters.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.config import Config
from edge_mer.errors import EdgeMerError
from edge_mer.pipeline.clock import STAGES, StageClock  # noqa: F401  (STAGES: re-exported)
from edge_mer.pipeline.face import FaceStage, make_detector
from edge_mer.pipeline.inline import InlineCapture
from edge_mer.pipeline.mqtt import MqttSink
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.pipeline.resample import FrameResampler
from edge_mer.pipeline.ring import CaptureThread, exponential_backoff
from edge_mer.pipeline.sinks import JsonlSink, MultiSink, Sink, StdoutSink
from edge_mer.pipeline.sources import SourceEnded, make_source
from edge_mer.pipeline.spotter import Event, Spotter, spotter_from_config
from edge_mer.pipeline.state_cache import StateCache, rows_per_track
from edge_mer.pipeline.telemetry import RuntimeMetrics
from edge_mer.runners import select_runner

log = logging.getLogger(__name__)


def reads_inline(source: Any) -> bool:
    """Whether the loop reads ``source`` itself (:class:`InlineCapture`): finite sources that
    wait for the consumer. A camera's frames come when they come, so a capture thread takes
    them into the ring; so do sources paced like a camera (``realtime=1``)."""
    if source.live:
        return False
    spec = getattr(source, "spec", None)
    return not (spec is not None and spec.get_bool("realtime", False))


def build_sinks(config: Config) -> list[tuple[str, Sink]]:
    """The sinks the config turns on."""
    sinks: list[tuple[str, Sink]] = []
    s = config.sinks
    if s.jsonl.path is not None:
        sinks.append(
            ("jsonl", JsonlSink(s.jsonl.path, max_bytes=s.jsonl.max_bytes, backups=s.jsonl.backups))
        )
    if s.stdout.enabled:
        sinks.append(("stdout", StdoutSink()))
    if s.mqtt.host:
        sinks.append(
            (
                "mqtt",
                MqttSink(
                    host=s.mqtt.host,
                    port=s.mqtt.port,
                    topic=s.mqtt.topic,
                    qos=s.mqtt.qos,
                    client_id=s.mqtt.client_id,
                    queue_size=s.mqtt.queue_size,
                    keepalive=s.mqtt.keepalive_s,
                ),
            )
        )
    return sinks


class LivePipeline:
    """Everything between the camera and the sinks, built from a :class:`Config`.

    Use as a context manager: entering starts the capture thread and activates the
    runners (call it on the thread that will call :meth:`run_frame`).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: RuntimeMetrics | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        encoder_graph: str | None = None,
    ) -> None:
        """``encoder_graph`` names the manifest graph the encoder runs (``encoder``,
        ``encoder_int8``, ...); None lets :func:`select_runner` pick it for this machine."""
        self.config = config
        self.bundle = Bundle.open(config.model.bundle, verify_hashes=config.model.verify_hashes)
        spec = self.bundle.input
        self.window = int(spec["window"])
        self.model_fps = float(spec["fps"])
        labels = self.bundle.labels
        face = config.face
        self.max_faces = face.max_faces
        self.selection = select_runner(
            self.bundle,
            config.model.runner,
            max_batch=self.max_faces,
            step_max_batch=self.max_faces * rows_per_track(self.bundle.state_kind, self.window),
            engines_dir=config.model.engines_dir,
            threads=config.model.threads,
            encoder_graph=encoder_graph,
        )
        self.encoder, self.step = self.selection.encoder, self.selection.step
        self.face = FaceStage(
            make_detector(
                face.detector, roi=face.roi, yunet_model=face.yunet_model, min_face=face.min_face
            ),
            detect_every=face.detect_every,
            window=self.window,
            relock_drift=face.relock_drift,
            max_faces=face.max_faces,
        )
        self.pre = FramePreprocessor(spec["height"], spec["width"], spec["channels"])
        self.cache = StateCache(
            self.bundle.states,
            self.max_faces,
            ttl_s=config.state.ttl_s,
            reset_gap_s=config.state.reset_gap_s,
            step=self.step,
            window=self.window,
            state_kind=self.bundle.state_kind,
        )
        sp = config.spotter
        self.spotter = spotter_from_config(labels, self.model_fps, sp)
        lag = sp.lag_frames if sp.lag_frames is not None else self.window // 4
        self.lag_s = lag / self.model_fps  # events are dated back by this much
        self.resampler = FrameResampler(self.model_fps)
        self.source = make_source(config.source.uri)
        src = config.source
        backoff = lambda: exponential_backoff(src.reconnect_min_s, src.reconnect_max_s)  # noqa: E731
        self.capture: CaptureThread | InlineCapture = (
            InlineCapture(self.source, backoff=backoff)
            if reads_inline(self.source)
            else CaptureThread(
                self.source,
                capacity=src.ring_frames,
                read_timeout=src.read_timeout_s,
                backoff=backoff,
            )
        )
        self.sinks = build_sinks(config)
        self.sink = MultiSink([s for _, s in self.sinks])
        self.metrics = metrics or RuntimeMetrics()
        for name, s in self.sinks:
            self.metrics.watch_sink(name, s)
        self.on_event = on_event
        self.clock = StageClock()
        self.model_hash = self.bundle.manifest_sha256
        self.frames = self.model_frames = self.events = 0
        self.last_inference: float | None = None
        # The latest events, for the end-of-run report; bounded: the service runs for weeks.
        self.records: deque[dict[str, Any]] = deque(maxlen=10_000)
        # Rounds a softmax (values in [0, 1] or NaN) to float32 and back, K values at once.
        self._f32 = struct.Struct(f"{len(labels)}f")
        self._ids: list[int] = []
        self._frame_rows: list[np.ndarray] = []  # the encoder's bound input rows, once active
        self._closed = False

    def start(self) -> None:
        """Activate the runners, warm them up, start capturing (what entering does)."""
        self.encoder.activate()
        self.step.activate()
        self._frame_rows = list(self.encoder.inputs["frames"][: self.max_faces])
        self.cache.check_runner()
        self.warm_up()
        self.capture.start()

    def __enter__(self) -> LivePipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm_up(self) -> None:
        """One encoder and one step call on zeros: READY comes only after this worked."""
        self.encoder.inputs["frames"][:1] = 0
        feats = self.encoder.infer(1)["features"]
        self.cache.step_batch([-1], feats, now=0.0)
        self.cache.evict(-1)

    def close(self, drain_s: float = 3.0) -> None:
        """Stop capture, close open events, flush and close the sinks, release runners.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.capture.stop()
        for event in self.spotter.flush():
            self._emit(event, time.perf_counter(), event.offset_ts)
        for _, sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                try:
                    flush(drain_s)
                except Exception as exc:  # a sink must not stop the shutdown
                    log.warning("flushing a sink failed: %s", exc)
            sink.close()
        for runner in (self.encoder, self.step):
            if runner.is_active:
                runner.deactivate()

    def _emit(self, event: Any, received: float, closing_ts: float) -> None:
        # The capture clock of file/synthetic sources is media time: emission on that
        # clock is the closing frame's ts plus the processing time since it arrived
        # (``received``: time.perf_counter() when it left the ring).
        emitted = closing_ts + (time.perf_counter() - received)
        record = event.to_record(
            self.config.source.uri, self.bundle.name, self.model_hash, emitted, closing_ts
        )
        self.sink.emit(record)
        self.events += 1
        self.metrics.events.labels(record["type"]).inc()
        self.metrics.event_latency.observe(record["latency_ms"] / 1e3)
        self.records.append(record)
        if self.on_event is not None:
            self.on_event(record)

    def run_frame(self, timeout: float) -> bool:
        """Take one frame from the ring and run it through. False on a timeout (no frame).

        Raises:
            SourceEnded: a finite source is exhausted (and every frame was processed).
            InputError: the source cannot be opened at all (a missing file).
        """
        perf = time.perf_counter
        t0 = perf()
        slot = self.capture.get(timeout)
        if slot is None:
            return False
        try:
            t1 = perf()  # the frame left the ring: its latency counts from here
            self.frames += 1
            resampler = self.resampler
            ticks = resampler.push(slot.ts)
            if resampler.restarted:
                for tid in list(self.cache.tracks()):
                    self.cache.reset(tid)
            if ticks == 0:
                self.clock.add("capture", t1 - t0)
                return True
            face = self.face
            image = slot.image
            tracks = face.process(image)
            if face.lost:
                for lost in face.lost:
                    self.cache.evict(lost)
                    self.spotter.forget(lost)
            t2 = perf()
            if not tracks:
                self.clock.add("capture", t1 - t0)
                self.clock.add("face", t2 - t1)
                return True
            ids = self._ids
            ids.clear()
            rows = self._frame_rows
            pre = self.pre
            for i, track in enumerate(tracks):  # the face stage keeps at most max_faces
                pre(image, track.crop.as_tuple(), out=rows[i])
                ids.append(track.id)
            t3 = perf()
            feats = self.encoder.infer(len(ids))["features"]
            t4 = perf()
            ts = slot.ts
            for _ in range(ticks):
                logits, ready = self.cache.step_batch(ids, feats, now=ts)
            t5 = perf()
            self.last_inference = time.monotonic()
            self.model_frames += 1
            closed = spot(self.spotter, self._f32, ids, logits, ready, ts - self.lag_s)
            t6 = end = perf()
            if closed:
                for event in closed:
                    self._emit(event, t1, ts)
                end = perf()
                self.clock.add("sinks", end - t6)
            self.clock.frame(t0, t1, t2, t3, t4, t5, t6, end)
            return True
        finally:
            self.capture.release(slot)

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        st = self.capture.stats()
        return (
            f"{st.state}; frames {self.frames}, inferences {self.model_frames}, "
            f"drops {st.drops}, reconnects {st.reconnects}, events {self.events}, "
            f"faces {len(self.face.tracks)}, runner {self.selection.kind}"
        )


def spot(
    spotter: Spotter,
    f32: struct.Struct,
    ids: list[int],
    logits: np.ndarray,
    ready: np.ndarray,
    ts: float,
) -> list[Event]:
    """Softmax of each ready track's logits (row ``i`` is track ``ids[i]``), then the
    spotter; the events this frame closed. A handful of classes: plain floats cost less
    than numpy's per-call overhead. The probabilities are rounded to float32 (``f32``
    packs K of them), as the model's outputs always were: spot-eval records them as
    float32 and replays them, and the same values give the same events."""
    closed: list[Event] = []
    rows, flags = logits.tolist(), ready.tolist()
    exp = math.exp
    for i, tid in enumerate(ids):
        if flags[i]:
            row: list[float] = rows[i]
            top = max(row)
            e = [exp(x - top) for x in row]
            inv = 1.0 / sum(e)
            events = spotter.update(tid, ts, f32.unpack(f32.pack(*[x * inv for x in e])))
            if events:
                closed.extend(events)
    return closed


def run_until(
    pipeline: LivePipeline,
    *,
    frames: int | None = None,
    seconds: float | None = None,
    stop: Callable[[], bool] = lambda: False,
    tick: Callable[[], None] = lambda: None,
    timeout: float = 0.25,
) -> str:
    """Drive ``pipeline`` until the source ends, ``frames`` were read, ``seconds`` passed,
    or ``stop()`` says so. ``tick`` runs after every loop turn (watchdog, status).
    Returns why it stopped: "ended", "frames", "duration" or "stopped"."""
    start = time.monotonic()
    while True:
        if stop():
            return "stopped"
        if frames is not None and pipeline.frames >= frames:
            return "frames"
        if seconds is not None and time.monotonic() - start >= seconds:
            return "duration"
        try:
            pipeline.run_frame(timeout)
        except SourceEnded:
            return "ended"
        except EdgeMerError:
            raise
        tick()
