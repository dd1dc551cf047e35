"""Prometheus text exposition (format 0.0.4) without prometheus_client, and SoC temperature.

Metrics are updated from the pipeline threads (a lock each, no allocation after a label
combination's first use) and rendered by a stdlib HTTP server thread bound to 127.0.0.1
by default: the service publishes nothing to the network unless told to.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_mer.errors import InputError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: Any) -> Any:
        """The child for these label values (created once, then reused)."""
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            with self._lock:
                child = self._children.setdefault(key, self._new_child())
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def _default(self) -> Any:
        return self.labels()

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for key, child in list(self._children.items()):
            out.extend(self._render_child(key, child))
        return out

    def _render_child(self, key: tuple[str, ...], child: Any) -> list[str]:
        raise NotImplementedError


class _Value:
    __slots__ = ("fn", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.fn: Callable[[], float | None] | None = None


class Counter(_Metric):
    """Monotonic total. ``name`` should end in ``_total``."""

    kind = "counter"

    def _new_child(self) -> _Value:
        return _Value()

    def inc(self, amount: float = 1.0, *labels: Any) -> None:
        child = self.labels(*labels)
        with self._lock:
            child.value += amount

    def set_function(self, fn: Callable[[], float | None], *labels: Any) -> None:
        """Read the total from ``fn`` at scrape time (e.g. a sink's ``dropped``)."""
        self.labels(*labels).fn = fn

    def _render_child(self, key: tuple[str, ...], child: _Value) -> list[str]:
        v = _read(child, self.name)
        return [] if v is None else [f"{self.name}{_labels(self.labelnames, key)} {_fmt(v)}"]


class Gauge(Counter):
    """A value that goes up and down; ``set_function`` values of None are left out."""

    kind = "gauge"

    def set(self, value: float, *labels: Any) -> None:
        child = self.labels(*labels)
        child.value = float(value)


def _read(child: _Value, name: str) -> float | None:
    if child.fn is None:
        return child.value
    try:
        v = child.fn()
    except Exception as e:  # a broken probe must not break the scrape
        log.debug("metric %s: probe failed: %s", name, e)
        return None
    return None if v is None else float(v)


class _HistChild:
    __slots__ = ("counts", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)  # per bucket, the last one is +Inf
        self.sum = 0.0


class Histogram(_Metric):
    """Fixed upper bounds (seconds, ascending); rendered cumulative with ``+Inf``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
        labelnames: Sequence[str] = (),
    ) -> None:
        b = [float(x) for x in buckets]
        if not b or any(x >= y for x, y in itertools.pairwise(b)):
            raise ValueError(f"{name}: buckets must be non-empty and strictly increasing: {b}")
        self.buckets = tuple(b)
        super().__init__(name, help, labelnames)

    def _new_child(self) -> _HistChild:
        return _HistChild(len(self.buckets))

    def observe(self, value: float, *labels: Any) -> None:
        child = self.labels(*labels)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            child.counts[i] += 1
            child.sum += value

    def _render_child(self, key: tuple[str, ...], child: _HistChild) -> list[str]:
        with self._lock:
            counts = list(child.counts)
            total = child.sum
        out = []
        acc = 0
        for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
            acc += c
            le = f'le="{_fmt(bound)}"'
            out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {acc}")
        lab = _labels(self.labelnames, key)
        out.append(f"{self.name}_sum{lab} {_fmt(total)}")
        out.append(f"{self.name}_count{lab} {acc}")
        return out


class Registry:
    """A named set of metrics, rendered in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, m: _Metric) -> Any:
        if m.name in self._metrics:
            raise ValueError(f"metric {m.name!r} registered twice")
        self._metrics[m.name] = m
        return m

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labelnames))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labelnames))

    def histogram(
        self,
        name: str,
        help: str,
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
        labelnames: Sequence[str] = (),
    ) -> Histogram:
        return self._add(Histogram(name, help, buckets, labelnames))

    def render(self) -> str:
        lines: list[str] = []
        for m in list(self._metrics.values()):
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


class RuntimeMetrics:
    """The pipeline's standard metrics (names prefixed ``edge_mer_``)."""

    def __init__(self, registry: Registry | None = None, thermal_root: str = "/sys/class/thermal"):
        r = self.registry = registry or Registry()
        self.camera_fps = r.gauge("edge_mer_camera_fps", "Frames per second from the source.")
        self.inference_fps = r.gauge(
            "edge_mer_inference_fps", "Frames per second through the encoder."
        )
        self.frames = r.counter("edge_mer_frames_total", "Frames captured.")
        self.drops = r.counter(
            "edge_mer_frames_dropped_total", "Frames dropped, by stage.", ["stage"]
        )
        self.events = r.counter("edge_mer_events_total", "Events emitted, by type.", ["type"])
        self.event_latency = r.histogram(
            "edge_mer_event_latency_seconds",
            "Emission minus capture of the frame that closed the event.",
        )
        self.frame_latency = r.histogram(
            "edge_mer_frame_latency_seconds", "Capture to class probabilities, per frame."
        )
        self.stage_seconds = r.histogram(
            "edge_mer_stage_seconds", "Time spent per stage and frame.", STAGE_BUCKETS_S, ["stage"]
        )
        self.sink_emitted = r.counter(
            "edge_mer_sink_emitted_total", "Records delivered, by sink.", ["sink"]
        )
        self.sink_dropped = r.counter(
            "edge_mer_sink_dropped_total", "Records given up, by sink.", ["sink"]
        )
        self.sink_errors = r.counter("edge_mer_sink_errors_total", "Sink failures.", ["sink"])
        self.temperature = r.gauge(
            "edge_mer_soc_temperature_celsius",
            "SoC temperature; absent where the board exposes none.",
        )
        self.temperature.set_function(lambda: read_soc_temperature(thermal_root))

    def watch_sink(self, name: str, sink: Any) -> None:
        """Report a sink's counters (read at scrape time)."""
        self.sink_emitted.set_function(lambda: sink.emitted, name)
        self.sink_dropped.set_function(lambda: sink.dropped, name)
        self.sink_errors.set_function(lambda: sink.errors, name)


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


class MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it back from :attr:`port`). A port in use raises
    :class:`InputError`.
    """

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 9108) -> None:
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                body = reg.render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics %s: %s", self.address_string(), format % args)

        try:
            self._server = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as e:
            raise InputError(
                f"metrics endpoint {host}:{port} cannot be bound ({e.strerror}); "
                "choose another metrics port"
            ) from None
        self._server.daemon_threads = True
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
