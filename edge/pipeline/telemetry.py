"""Prometheus metrics with prometheus_client, served on loopback; and SoC temperature.

:class:`RuntimeMetrics` owns a :class:`~prometheus_client.CollectorRegistry` of its own
(never the process-global one), so two pipelines in one process do not collide. The frame
loop touches no Prometheus metric per frame: it records stage timings and each frame's
latency in the pipeline's preallocated rings, and :meth:`RuntimeMetrics.record_stages`
(the daemon calls it at 10 Hz) copies what is new into ``stage_seconds``,
``frame_latency`` and ``frames``. Events update their counters as they happen. Sink
counters and the SoC temperature are read at scrape time by a collector, and an absent
sensor is absent from the output, not 0.

:class:`MetricsServer` serves prometheus_client's WSGI app (content negotiation, gzip) from
a daemon thread bound to 127.0.0.1 by default: the service publishes nothing to the
network unless told to.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_mer.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "STAGE_BUCKETS_S",
    "MetricsServer",
    "RuntimeMetrics",
    "read_soc_temperature",
    "read_thermal_zones",
]

#: What a plain scrape (no Accept header) gets: the text format 0.0.4, as before.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class _ScrapeTime:
    """Collects, at scrape time, values that live elsewhere: sink counters, temperature."""

    def __init__(self, thermal_root: str) -> None:
        self.thermal_root = thermal_root
        self.sinks: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        families = {
            "emitted": CounterMetricFamily(
                "edge_mer_sink_emitted", "Records delivered, by sink.", labels=["sink"]
            ),
            "dropped": CounterMetricFamily(
                "edge_mer_sink_dropped", "Records given up, by sink.", labels=["sink"]
            ),
            "errors": CounterMetricFamily(
                "edge_mer_sink_errors", "Sink failures.", labels=["sink"]
            ),
        }
        for name, sink in list(self.sinks.items()):
            for attr, family in families.items():
                value = _probe(lambda s=sink, a=attr: getattr(s, a), f"sink {name} {attr}")
                if value is not None:
                    family.add_metric([name], value)
        yield from families.values()
        temperature = GaugeMetricFamily(
            "edge_mer_soc_temperature_celsius",
            "SoC temperature; absent where the board exposes none.",
        )
        t = _probe(lambda: read_soc_temperature(self.thermal_root), "temperature")
        if t is not None:
            temperature.add_metric([], t)
        yield temperature

    def describe(self) -> list[Metric]:
        return []  # names are fixed above; nothing to check against other collectors


def _probe(fn: Callable[[], Any], what: str) -> float | None:
    try:
        v = fn()
    except Exception as e:  # a broken probe must not break the scrape
        log.debug("metric %s: probe failed: %s", what, e)
        return None
    return None if v is None else float(v)


class RuntimeMetrics:
    """The pipeline's standard metrics (names prefixed ``edge_mer_``), in ``registry``.

    Update per event: ``events.labels(type).inc()``, ``event_latency.observe(s)``; from a
    slower tick: :meth:`record_stages` (stage timings, frame latencies and the frame count,
    from the pipeline's rings), :meth:`record_drops`, ``camera_fps.set(v)``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, thermal_root: str = "/sys/class/thermal"
    ) -> None:
        # A `_created` series per counter and histogram doubles what a device exports for
        # nothing its scraper needs; prometheus_client offers only a process-wide switch.
        disable_created_metrics()
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.camera_fps = Gauge(
            "edge_mer_camera_fps", "Frames per second from the source.", registry=r
        )
        self.inference_fps = Gauge(
            "edge_mer_inference_fps", "Frames per second through the encoder.", registry=r
        )
        self.frames = Counter("edge_mer_frames_total", "Frames captured.", registry=r)
        self.drops = Counter(
            "edge_mer_frames_dropped_total", "Frames dropped, by stage.", ["stage"], registry=r
        )
        self.events = Counter(
            "edge_mer_events_total", "Events emitted, by type.", ["type"], registry=r
        )
        self.event_latency = Histogram(
            "edge_mer_event_latency_seconds",
            "Emission minus capture of the frame that closed the event.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.frame_latency = Histogram(
            "edge_mer_frame_latency_seconds",
            "Capture to class probabilities, per frame.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "edge_mer_stage_seconds",
            "Time spent per stage and frame.",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self._scrape = _ScrapeTime(thermal_root)
        r.register(self._scrape)
        self._stage_seen: dict[str, int] = {}
        self._latency_seen = 0
        self._stage_clock: object | None = None
        self._drops_seen: dict[str, int] = {}

    def watch_sink(self, name: str, sink: Any) -> None:
        """Report a sink's ``emitted``/``dropped``/``errors`` counters (read at scrape time)."""
        self._scrape.sinks[name] = sink

    def record_stages(self, clock: Any) -> None:
        """Observe the stage timings and frame latencies ``clock`` (a
        :class:`~edge_mer.pipeline.clock.StageClock`) recorded since the last call, and count
        its frames (``capture`` samples) into ``frames``; samples that a ring already
        overwrote are skipped (but counted). Call it at a low rate (the daemon does, at
        10 Hz), not per frame."""
        if clock is not self._stage_clock:  # a new pipeline (reload): its rings start at 0
            self._stage_clock, self._stage_seen, self._latency_seen = clock, {}, 0
        n, values = clock.latency_ring()
        keep = len(values)
        for i in range(max(self._latency_seen, n - keep), n):
            self.frame_latency.observe(float(values[i % keep]))
        self._latency_seen = n
        for stage, n, values in clock.rings():
            seen = self._stage_seen.get(stage, 0)
            if n == seen:
                continue
            if stage == "capture":  # one sample per frame taken from the source
                self.frames.inc(n - seen)
            keep = len(values)
            child = self.stage_seconds.labels(stage)
            for i in range(max(seen, n - keep), n):
                child.observe(float(values[i % keep]))
            self._stage_seen[stage] = n

    def record_drops(self, stage: str, total: int) -> None:
        """Advance ``frames_dropped_total{stage}`` to a running ``total`` (a total that went
        down belongs to a new pipeline after a reload, and counts from 0)."""
        seen = self._drops_seen.get(stage, 0)
        if total < seen:
            seen = 0
        child = self.drops.labels(stage)  # exported from the first call on, at 0
        if total > seen:
            child.inc(total - seen)
        self._drops_seen[stage] = total

    def render(self) -> str:
        """The registry in the Prometheus text format (what a plain scrape returns)."""
        return generate_latest(self.registry).decode("utf-8")


def read_thermal_zones(root: str = "/sys/class/thermal") -> dict[str, float]:
    """Zone type (or zone name) -> °C, for every readable thermal zone."""
    zones: dict[str, float] = {}
    for zdir in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
        try:
            with open(os.path.join(zdir, "temp")) as f:
                milli = int(f.read().strip())
        except (OSError, ValueError):
            continue  # some zones refuse reads (EINVAL/ENODATA) while their sensor sleeps
        if not -40000 <= milli <= 150000:
            continue
        try:
            with open(os.path.join(zdir, "type")) as f:
                name = f.read().strip() or os.path.basename(zdir)
        except OSError:
            name = os.path.basename(zdir)
        if name in zones:
            name = f"{name}:{os.path.basename(zdir)}"
        zones[name] = milli / 1000.0
    return zones


def read_soc_temperature(root: str = "/sys/class/thermal") -> float | None:
    """The SoC's temperature in °C, or None where the board exposes none.

    Prefers CPU/SoC zones (``cpu-thermal`` on a Pi, ``cpu-thermal``/``CPU-therm`` on a
    Jetson) and takes the hottest; ignores PMIC zones (Jetson's reads a constant 100 °C).
    """
    zones = {k: v for k, v in read_thermal_zones(root).items() if "pmic" not in k.lower()}
    if not zones:
        return None
    soc = [v for k, v in zones.items() if "cpu" in k.lower() or "soc" in k.lower()]
    return max(soc or zones.values())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (and ``/``) from a daemon thread;
    any other path is a 404.

    ``port=0`` picks a free port (read it back from :attr:`port`). ``host`` ``*`` listens
    on every IPv4 address; ``[::1]`` (or any IPv6 address) on IPv6. A port that cannot be
    bound raises :class:`InputError`.
    """

    def __init__(
        self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"try /metrics\n"]
            return metrics_app(environ, start_response)

        addr = host.strip("[]")
        server_class = _Server6 if ":" in addr else _Server
        if addr == "*":
            addr = "0.0.0.0"
        try:
            self._server = make_server(
                addr, int(port), app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as e:
            raise InputError(
                f"metrics endpoint {host}:{port} cannot be bound ({e.strerror or e}); "
                "choose another metrics port"
            ) from None
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"metrics-{host}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
