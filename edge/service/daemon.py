"""The service around the frame loop (DESIGN §7): signals, sd_notify, watchdog, reload.

- READY=1 after the config and bundle are verified and one warm-up inference ran; a live
  camera that is not there yet does not hold it back (STATUS says "waiting for camera").
- WATCHDOG=1 only while the loop advances: frames and inferences flowing, or the capture
  thread's retry loop turning. A stuck inference or a stuck camera read stops the pings
  and systemd restarts the service.
- SIGTERM / SIGINT: STOPPING=1, close open events, flush the sinks (bounded), exit 0;
  while starting, the start-up is abandoned; stuck in C code, the process ends by itself
  ``service.drain_s + 5`` s later (exit 1) (see :mod:`edge_mer.service.signals`).
- SIGHUP: RELOADING=1, reload the config; a bad new config is logged and the old one
  kept; then READY=1 again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_mer.config import Config
from edge_mer.errors import InputError
from edge_mer.pipeline.live import LivePipeline, run_until
from edge_mer.pipeline.telemetry import MetricsServer, RuntimeMetrics
from edge_mer.service.notify import Heartbeat, Notifier, WatchdogPolicy
from edge_mer.service.signals import StopRequested, StopSignals

#: Seconds beyond ``service.drain_s`` a stop may take before the process ends by itself.
STOP_MARGIN_S = 5.0

log = logging.getLogger(__name__)


class Daemon:
    """Runs :class:`LivePipeline` until stopped; rebuilds it on reload.

    Args:
        load: returns the current config (called at start and on every SIGHUP).
        frames, seconds: stop after this many frames or seconds (None: run until stopped or
            the source ends).
    """

    def __init__(
        self,
        load: Callable[[], Config],
        *,
        frames: int | None = None,
        seconds: float | None = None,
        notifier: Notifier | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        hard_stop: bool = False,
    ) -> None:
        """``hard_stop``: end the process if a stop signal is not honoured in time (the
        command line sets it; a library caller keeps its process)."""
        self.load = load
        self.hard_stop = hard_stop
        self.frames, self.seconds = frames, seconds
        self.notifier = notifier or Notifier()
        self.on_event = on_event
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.pipeline: LivePipeline | None = None
        self.metrics_server: MetricsServer | None = None
        self.reason = ""
        self.reloads = 0

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def request_reload(self, *_: object) -> None:
        self._reload.set()

    def run(self) -> str:
        """Run until stopped or done; returns why ("ended", "frames", "duration", "stopped").

        Raises:
            InputError: the first config, the bundle or the source is unusable (exit 2).
        """
        # Until the config says how long the drain may take, assume the default one.
        deadline = 3.0 + STOP_MARGIN_S if self.hard_stop else None
        signals = StopSignals(self.request_stop, self.request_reload, deadline_s=deadline)
        server = None
        try:
            with signals:
                config = self.load()
                if self.hard_stop:
                    signals.deadline_s = config.service.drain_s + STOP_MARGIN_S  # <= 15 s
                metrics = RuntimeMetrics()
                if config.metrics.enabled:
                    host, _, port = config.metrics.bind.rpartition(":")
                    server = MetricsServer(metrics.registry, host or "127.0.0.1", int(port))
                    self.metrics_server = server
                while True:
                    self.reason = self._run_once(config, metrics, signals)
                    if not self._reload.is_set() or self._stop.is_set():
                        break
                    self._reload.clear()
                    self.reloads += 1
                    self.notifier.reloading("reloading the config")
                    signals.starting = True
                    try:
                        config = self.load()
                        log.info("config reloaded")
                    except InputError as exc:
                        log.error("config reload failed, keeping the running config: %s", exc)
        except StopRequested:
            self.reason = "stopped"
        finally:
            self.notifier.stopping()
            if server is not None:
                server.close()
        return self.reason

    def _run_once(self, config: Config, metrics: RuntimeMetrics, signals: StopSignals) -> str:
        service = config.service
        signals.starting = True
        pipeline = LivePipeline(config, metrics=metrics, on_event=self.on_event)
        self.pipeline = pipeline
        heartbeat = Heartbeat(
            self.notifier, WatchdogPolicy.from_env(), stall_s=service.watchdog_stall_s
        )
        next_status = 0.0
        started = time.monotonic()

        next_beat = 0.0

        def tick() -> None:
            nonlocal next_status, next_beat
            now = time.monotonic()
            # Called after every frame; the watchdog needs news far less often (a ping goes
            # out at most every half interval), so the snapshot is taken at 10 Hz.
            if now < next_beat:
                return
            next_beat = now + 0.1
            st = pipeline.capture.stats()
            metrics.record_stages(pipeline.clock)
            metrics.record_drops("ring", st.drops)
            streaming = st.state == "streaming"
            # Progress: frames through the loop, or the capture thread's retry loop turning
            # (its read timeouts and failed opens) while the camera is away.
            progress = pipeline.frames + st.timeouts + st.open_failures + st.reconnects
            heartbeat.beat(progress, last_inference=pipeline.last_inference if streaming else None)
            if now >= next_status:
                next_status = now + service.status_interval_s
                elapsed = max(1e-6, now - started)
                metrics.camera_fps.set(pipeline.frames / elapsed)
                metrics.inference_fps.set(pipeline.model_frames / elapsed)
                self.notifier.status(pipeline.status())

        try:
            pipeline.start()  # the warm-up; a stop signal now raises StopRequested
            signals.starting = False
            self.notifier.ready(pipeline.status())
            why = run_until(
                pipeline,
                frames=self.frames,
                seconds=self.seconds,
                stop=lambda: self._stop.is_set() or self._reload.is_set(),
                tick=tick,
            )
        finally:
            metrics.record_stages(pipeline.clock)  # the frames since the last 10 Hz tick
            self.notifier.status(f"draining: {pipeline.status()}")
            pipeline.close(service.drain_s)
        return why
