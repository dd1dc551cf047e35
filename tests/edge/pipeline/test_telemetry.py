"""Prometheus endpoint on loopback (prometheus_client parses what it serves, under the
same names as before), stage timings from the rings, and SoC temperature from sysfs."""

from __future__ import annotations

import math
import re
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_mer.errors import InputError
from edge_mer.pipeline.live import StageClock
from edge_mer.pipeline.telemetry import (
    CONTENT_TYPE,
    MetricsServer,
    RuntimeMetrics,
    read_soc_temperature,
    read_thermal_zones,
)

# The names and labels a dashboard relies on (the same as before prometheus_client).
FAMILIES = {
    "edge_mer_camera_fps": ("gauge", ()),
    "edge_mer_inference_fps": ("gauge", ()),
    "edge_mer_frames": ("counter", ()),
    "edge_mer_frames_dropped": ("counter", ("stage",)),
    "edge_mer_events": ("counter", ("type",)),
    "edge_mer_event_latency_seconds": ("histogram", ()),
    "edge_mer_frame_latency_seconds": ("histogram", ()),
    "edge_mer_stage_seconds": ("histogram", ("stage",)),
    "edge_mer_sink_emitted": ("counter", ("sink",)),
    "edge_mer_sink_dropped": ("counter", ("sink",)),
    "edge_mer_sink_errors": ("counter", ("sink",)),
    "edge_mer_soc_temperature_celsius": ("gauge", ()),
}

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$"
)


def parse(text: str) -> dict[str, float]:
    """Every line is a comment (HELP/TYPE) or a valid sample, and prometheus_client's parser
    reads it; samples by name and labels, written ``name{a="x",le="y"}`` (labels sorted,
    ``le`` last, values unescaped, bounds as the parser gives them)."""
    assert text.endswith("\n")
    for line in text.splitlines():
        if not (line.startswith("# HELP ") or line.startswith("# TYPE ")):
            assert SAMPLE.match(line), f"not an exposition line: {line!r}"
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sorted(sample.labels.items(), key=lambda kv: (kv[0] == "le", kv[0]))
            inner = ",".join(f'{k}="{v}"' for k, v in labels)
            out[f"{sample.name}{{{inner}}}" if inner else sample.name] = sample.value
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
    m.record_drops("ring", 2)
    m.events.labels("micro_expression").inc()
    for v in (0.003, 0.02, 0.02, 0.4, 7.0):
        m.event_latency.observe(v)
    m.stage_seconds.labels("encoder").observe(0.004)
    m.stage_seconds.labels("step").observe(0.0001)

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
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in FAMILIES.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)
    assert not [n for n in s if "_created" in n]
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
    assert s['edge_mer_event_latency_seconds_bucket{le="5.0"}'] == 4
    assert values[-1] == s["edge_mer_event_latency_seconds_count"] == 5
    assert s["edge_mer_event_latency_seconds_sum"] == pytest.approx(7.443)
    assert s['edge_mer_stage_seconds_bucket{stage="encoder",le="0.005"}'] == 1


def test_a_plain_scrape_and_an_openmetrics_scrape():
    m = RuntimeMetrics()
    m.frames.inc()
    with MetricsServer(m.registry, port=0) as srv:
        req = urllib.request.Request(srv.url, headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.read().decode().endswith("# EOF\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/", timeout=5) as r:
            assert "edge_mer_frames_total 1.0" in r.read().decode()


def test_two_pipelines_in_one_process_have_their_own_registries():
    a, b = RuntimeMetrics(), RuntimeMetrics()
    a.frames.inc(5)
    assert "edge_mer_frames_total 5.0" in a.render()
    assert "edge_mer_frames_total 0.0" in b.render()


def test_stage_timings_come_from_the_rings_at_a_low_rate():
    m = RuntimeMetrics()
    clock = StageClock(keep=4)
    for v in (0.0002, 0.003):
        clock.add("encoder", v)
    m.record_stages(clock)
    m.record_stages(clock)  # nothing new: nothing observed twice
    for _ in range(10):  # more than the ring keeps between two calls: the oldest are gone
        clock.add("encoder", 0.2)
    m.record_stages(clock)
    s = parse(m.render())
    assert s['edge_mer_stage_seconds_count{stage="encoder"}'] == 2 + 4
    assert s['edge_mer_stage_seconds_bucket{stage="encoder",le="0.0005"}'] == 1
    assert s['edge_mer_stage_seconds_sum{stage="encoder"}'] == pytest.approx(0.8032)
    assert "edge_mer_frames_total 0.0" in m.render()  # frames = capture samples
    for i in range(6):
        clock.add("capture", 1e-5)
        clock.add_latency(0.001 * (i + 1))
    m.record_stages(clock)
    m.record_stages(clock)
    s = parse(m.render())
    assert s["edge_mer_frames_total"] == 6  # counted even when the ring kept only 4
    assert s["edge_mer_frame_latency_seconds_count"] == 4  # the ones the ring still held
    assert s["edge_mer_frame_latency_seconds_sum"] == pytest.approx(0.003 + 0.004 + 0.005 + 0.006)
    m.record_stages(StageClock(keep=4))  # a reload's new clock starts from 0
    m.record_drops("ring", 7)
    m.record_drops("ring", 3)  # a new pipeline's running total: counts from 0 again
    assert parse(m.render())['edge_mer_frames_dropped_total{stage="ring"}'] == 10


def test_label_values_are_escaped_and_bounds_inclusive():
    r = CollectorRegistry()
    Histogram("x_seconds", "h", buckets=[1.0, 2.0], registry=r).observe(1.0)
    Gauge("g", "g", ["name"], registry=r).labels('a"b\\c\nd').set(1)
    s = parse(generate_latest(r).decode())
    assert s['x_seconds_bucket{le="1.0"}'] == 1
    assert 'g{name="a"b\\c\nd"}' in s  # unescaped by the parser
    assert 'g{name="a\\"b\\\\c\\nd"} 1.0' in generate_latest(r).decode()


def test_temperature_absent_is_absent_not_zero(tmp_path):
    assert read_soc_temperature(str(tmp_path)) is None
    r = RuntimeMetrics(thermal_root=str(tmp_path))
    text = r.render()
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
            MetricsServer(CollectorRegistry(), port=s.getsockname()[1])
