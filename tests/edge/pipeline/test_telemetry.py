"""Prometheus text endpoint on loopback, and SoC temperature from sysfs."""

from __future__ import annotations

import math
import re
import socket
import urllib.error
import urllib.request

import pytest

from edge_mer.errors import InputError
from edge_mer.pipeline.telemetry import (
    CONTENT_TYPE,
    MetricsServer,
    Registry,
    RuntimeMetrics,
    read_soc_temperature,
    read_thermal_zones,
)

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$"
)


def parse(text: str) -> dict[str, float]:
    """Every line is a comment (HELP/TYPE) or a valid sample; samples by full name."""
    out: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def fake_thermal(root, zones):
    for i, (typ, milli) in enumerate(zones):
        z = root / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(typ + "\n")
        (z / "temp").write_text(f"{milli}\n")
    return str(root)


def test_endpoint_serves_valid_exposition_on_loopback(tmp_path):
    root = fake_thermal(tmp_path, [("cpu-thermal", 48312)])
    m = RuntimeMetrics(thermal_root=root)
    m.camera_fps.set(29.97)
    m.frames.inc(3)
    m.drops.inc(2, "ring")
    m.events.inc(1, "micro_expression")
    for v in (0.003, 0.02, 0.02, 0.4, 7.0):
        m.event_latency.observe(v)
    m.stage_seconds.observe(0.004, "encoder")
    m.stage_seconds.observe(0.0001, "step")

    class FakeSink:
        emitted, dropped, errors = 5, 1, 0

    m.watch_sink("jsonl", FakeSink())
    with MetricsServer(m.registry, port=0) as srv:
        assert srv.host == "127.0.0.1"
        with urllib.request.urlopen(srv.url, timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            text = r.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/nope", timeout=5)
    s = parse(text)
    assert s["edge_mer_camera_fps"] == pytest.approx(29.97)
    assert s['edge_mer_frames_dropped_total{stage="ring"}'] == 2
    assert s["edge_mer_soc_temperature_celsius"] == pytest.approx(48.312)
    assert s['edge_mer_sink_dropped_total{sink="jsonl"}'] == 1
    assert "# TYPE edge_mer_event_latency_seconds histogram" in text
    # Cumulative buckets, +Inf == count, sum of observations.
    buckets = [
        (k, v) for k, v in s.items() if k.startswith("edge_mer_event_latency_seconds_bucket")
    ]
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1][0].endswith('le="+Inf"}')
    assert s['edge_mer_event_latency_seconds_bucket{le="0.005"}'] == 1
    assert s['edge_mer_event_latency_seconds_bucket{le="0.025"}'] == 3
    assert s['edge_mer_event_latency_seconds_bucket{le="5"}'] == 4
    assert values[-1] == s["edge_mer_event_latency_seconds_count"] == 5
    assert s["edge_mer_event_latency_seconds_sum"] == pytest.approx(7.443)
    assert s['edge_mer_stage_seconds_bucket{stage="encoder",le="0.005"}'] == 1


def test_bucket_bound_is_inclusive_and_labels_are_escaped():
    r = Registry()
    h = r.histogram("x_seconds", "h", buckets=[1.0, 2.0])
    h.observe(1.0)
    g = r.gauge("g", "g", ["name"])
    g.set(1, 'a"b\\c\nd')
    s = parse(r.render())
    assert s['x_seconds_bucket{le="1"}'] == 1
    assert 'g{name="a\\"b\\\\c\\nd"}' in s


def test_temperature_absent_is_absent_not_zero(tmp_path):
    assert read_soc_temperature(str(tmp_path)) is None
    r = RuntimeMetrics(thermal_root=str(tmp_path))
    text = r.registry.render()
    assert "# TYPE edge_mer_soc_temperature_celsius gauge" in text
    assert not any(
        line.startswith("edge_mer_soc_temperature_celsius ") for line in text.splitlines()
    )


def test_temperature_prefers_cpu_and_ignores_pmic(tmp_path):
    root = fake_thermal(
        tmp_path, [("PMIC-Die", 100000), ("GPU-therm", 52000), ("CPU-therm", 47500),
                   ("bogus", -274000)],
    )  # fmt: skip
    zones = read_thermal_zones(root)
    assert "bogus" not in zones and zones["GPU-therm"] == 52.0
    assert read_soc_temperature(root) == 47.5
    root2 = tmp_path / "b"
    root2.mkdir()
    assert read_soc_temperature(fake_thermal(root2, [("PMIC-Die", 100000), ("gpu", 51000)])) == 51


def test_real_board_temperature_is_none_or_plausible():
    t = read_soc_temperature()
    assert t is None or (-40 <= t <= 150 and not math.isnan(t))


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(InputError, match="cannot be bound"):
            MetricsServer(Registry(), port=s.getsockname()[1])
