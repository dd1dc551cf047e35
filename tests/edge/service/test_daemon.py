"""``edge-mer run`` as a process: events, sd_notify over a real datagram socket, SIGTERM,
SIGHUP, a camera that is not there, and bad inputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

EDGE_MER = str(Path(sys.executable).parent / "edge-mer")
RECORD_KEYS = {
    "type",
    "label",
    "score",
    "probs",
    "track",
    "onset_ts",
    "apex_ts",
    "offset_ts",
    "duration_ms",
    "emitted_ts",
    "latency_ms",
    "source",
    "model",
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import torch

    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.models import build
    from edge_mer.convert.pipeline import ConvertOptions, convert
    from tests.conftest import TINY

    tmp = tmp_path_factory.mktemp("daemon")
    torch.manual_seed(0)
    model = build(TINY)
    save_checkpoint(model, tmp / "m.safetensors", model.config)
    convert(tmp / "m.safetensors", tmp / "bundle", ConvertOptions())
    return tmp / "bundle"


def _run(*args: str, timeout: float = 120, env: dict | None = None):
    return subprocess.run(
        [EDGE_MER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_run_writes_design_event_records(bundle: Path, tmp_path: Path) -> None:
    from edge_mer.config import config_from_args
    from edge_mer.pipeline.live import LivePipeline

    events = tmp_path / "ev.jsonl"
    res = _run(
        "run",
        "--bundle",
        str(bundle),
        "--source",
        "synthetic://?seconds=6&fps=100&seed=3",
        "--events",
        str(events),
        "--frames",
        "400",
    )
    assert res.returncode == 0, res.stderr
    assert "stopped (frames): 400 frames" in res.stderr
    assert "Traceback" not in res.stderr
    for line in events.read_text().splitlines():
        record = json.loads(line)
        assert set(record) == RECORD_KEYS
    # The same run in-process: a random-weight model may or may not fire, but every frame
    # reaches the model at its own rate (100 fps camera -> 50 fps model: half the frames).
    cfg = config_from_args(
        bundle,
        "synthetic://?seconds=2&fps=100&seed=3",
        stdout=False,
        tables={"face": {"detector": "none"}, "metrics": {"enabled": False}},
    )
    with LivePipeline(cfg) as p:
        while p.run_frame(1.0):
            if p.frames >= 200:
                break
    assert p.frames == 200 and p.model_frames == 100
    assert p.capture.stats().drops == 0  # a finite source waits for the consumer


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    return sock, path


def _collect(sock: socket.socket, until: str, deadline: float) -> list[str]:
    seen: list[str] = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in seen[-1]:
            break
    return seen


def _daemon(bundle: Path, source: str, notify: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [EDGE_MER, "run", "--bundle", str(bundle), "--source", source, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str, until: Callable[[dict[str, float]], bool], deadline: float) -> dict:
    """Samples by name and labels (``name{a="x"}``), parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    end = time.monotonic() + deadline
    while True:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        samples = {
            s.name + "".join(f'{{{k}="{v}"}}' for k, v in sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        if until(samples) or time.monotonic() > end:
            return samples
        time.sleep(0.2)


def test_ready_watchdog_status_metrics_then_stopping_on_sigterm(
    bundle: Path, tmp_path: Path
) -> None:
    sock, path = _notify_socket(tmp_path)
    port = _free_port()
    proc = _daemon(
        bundle,
        "synthetic://?seconds=600&fps=100&realtime=true",
        path,
        "--metrics",
        f"127.0.0.1:{port}",
    )
    try:
        seen = _collect(sock, "READY=1", 60)
        assert any("READY=1" in m for m in seen), seen
        seen = _collect(sock, "WATCHDOG=1", 10)
        assert any("WATCHDOG=1" in m for m in seen), "no watchdog ping while frames flow"
        # The endpoint of the running daemon: frames counted per frame, stage timings
        # copied from the rings at 10 Hz.
        encoder = 'edge_mer_stage_seconds_count{stage="encoder"}'
        s = _scrape(f"http://127.0.0.1:{port}/metrics", lambda s: s.get(encoder, 0) > 5, 20)
        assert s["edge_mer_frames_total"] > 5 and s[encoder] > 5, s
        assert 'edge_mer_frames_dropped_total{stage="ring"}' in s
        assert 'edge_mer_sink_emitted_total{sink="stdout"}' in s
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        seen = _collect(sock, "STOPPING=1", 10)
        assert any("STOPPING=1" in m for m in seen)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
        sock.close()
    assert "Traceback" not in proc.stderr.read()


def test_sighup_reloads_and_readies_again(bundle: Path, tmp_path: Path) -> None:
    sock, path = _notify_socket(tmp_path)
    proc = _daemon(bundle, "synthetic://?seconds=600&fps=100&realtime=true", path)
    try:
        assert any("READY=1" in m for m in _collect(sock, "READY=1", 60))
        proc.send_signal(signal.SIGHUP)
        seen = _collect(sock, "RELOADING=1", 10)
        assert any("RELOADING=1" in m for m in seen)
        assert any("READY=1" in m for m in _collect(sock, "READY=1", 30))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        sock.close()


def test_missing_camera_does_not_kill_the_daemon(bundle: Path, tmp_path: Path) -> None:
    sock, path = _notify_socket(tmp_path)
    proc = _daemon(bundle, "v4l2:///dev/video97", path, "--face", "none")
    try:
        seen = _collect(sock, "READY=1", 60)
        assert any("READY=1" in m for m in seen), seen
        seen = _collect(sock, "waiting for camera", 15)
        assert any("waiting for camera" in m for m in seen), seen
        assert proc.poll() is None, "the daemon exited without its camera"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        sock.close()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--source", "file:///no/such/clip.mp4", "--frames", "10"], "clip.mp4"),
        (["--source", "nope://x"], "nope://x"),
        (["--source", "synthetic://?seconds=1", "--runner", "cuda"], "cuda"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(bundle: Path, args: list[str], match: str) -> None:
    res = _run("run", "--bundle", str(bundle), *args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("edge-mer: error:")]
    assert len(lines) == 1 and match in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_bad_config_file_and_missing_bundle(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nbundle = "/nope"\n[source]\nuri = "synthetic://"\n')
    res = _run("run", "--config", str(cfg))
    assert res.returncode == 2 and "model.bundle" in res.stderr
    cfg.write_text('[model]\nbundle = "/nope"\nbundel = 1\n[source]\nuri = "synthetic://"\n')
    res = _run("run", "--config", str(cfg))
    assert res.returncode == 2 and "bundel" in res.stderr
    res = _run("run", "--bundle", str(tmp_path / "nothing"), "--source", "synthetic://")
    assert res.returncode == 2 and "nothing" in res.stderr
    res = _run("run")
    assert res.returncode == 2 and "--config" in res.stderr
