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
    # The tiny encoder is far under SMALL_ENCODER_MACS: one ORT thread, and the summary says so.
    assert "runner onnxruntime (1 encoder thread(s))" in res.stderr
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


# --- SIGTERM stops `run` within a few seconds, whatever the loop is doing ----------------


def _stuck_bundle(bundle: Path, out: Path) -> Path:
    """``bundle`` with an encoder whose every call spins ~forever inside ONNX Runtime (an
    ONNX Loop of 10^12 trips): the warm-up inference never returns to Python."""
    import hashlib
    import shutil

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(bundle, out)
    m = json.loads((out / "manifest.json").read_text())
    h, w, c = (m["input"][k] for k in ("height", "width", "channels"))

    def scalars(*names_types: tuple[str, int]) -> list:
        return [helper.make_tensor_value_info(n, t, []) for n, t in names_types]

    body = helper.make_graph(
        [
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        scalars(
            ("i", TensorProto.INT64), ("cond_in", TensorProto.BOOL), ("v_in", TensorProto.FLOAT)
        ),
        scalars(("cond_out", TensorProto.BOOL), ("v_out", TensorProto.FLOAT)),
        [numpy_helper.from_array(np.array(1e-9, np.float32), "one")],
    )
    consts = {
        "trips": np.array(10**12, np.int64),
        "cond": np.array(True),
        "v0": np.array(0, np.float32),
        "ax1": np.array([1], np.int64),
        "ones": np.ones((1, 16), np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "cond", "v0"], ["v"], body=body),
            helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["f"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "ax1"], ["mean2"]),
            helper.make_node("Add", ["mean2", "v"], ["s"]),
            helper.make_node("Mul", ["s", "ones"], ["features"]),
        ],
        "stuck_encoder",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", h, w, c])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, out / "encoder.onnx")
    data = (out / "encoder.onnx").read_bytes()
    m["graphs"]["encoder"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _stop_after(proc: subprocess.Popen, ready: Callable[[str], bool], wait: float) -> float:
    """Wait (up to 60 s) for a stderr line that ``ready`` accepts, sleep ``wait``, send
    SIGTERM; return how long the process took to exit after it."""
    assert proc.stderr is not None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if ready(line):
            break
        assert line or proc.poll() is None, "the process ended before it was stopped"
    time.sleep(wait)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    return time.monotonic() - sent


def test_sigterm_unwinds_a_slow_start(tmp_path: Path) -> None:
    # The config loader is the daemon's first step (on a slow mount, a bundle hashed on an
    # SD card): no frame loop runs yet to look at the stop flag.
    script = (
        "import sys, time\n"
        "from edge_mer.service.daemon import Daemon\n"
        "def load():\n"
        "    print('loading', file=sys.stderr, flush=True)\n"
        "    time.sleep(120)\n"
        "d = Daemon(load, hard_stop=True)\n"
        "print(d.run(), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    took = _stop_after(proc, lambda line: "loading" in line, 0.2)
    assert took < 2 and proc.returncode == 0
    assert proc.stdout.read().strip() == "stopped"


def test_sigterm_with_the_capture_thread_stuck_in_a_read(bundle: Path, tmp_path: Path) -> None:
    # A frame folder whose only "image" is a FIFO nobody writes: cv2.imread blocks in C on
    # the capture thread forever, as a camera driver that stops answering does. (Paced like
    # a camera, the folder is read on a capture thread; unpaced, on the loop's own.)
    frames = tmp_path / "frames"
    frames.mkdir()
    os.mkfifo(frames / "0001.png")
    sock, path = _notify_socket(tmp_path)
    proc = _daemon(bundle, f"frames://{frames}?realtime=1", path, "--face", "none")
    try:
        assert any("READY=1" in m for m in _collect(sock, "READY=1", 60))
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
        sock.close()
    assert "blocked read" in proc.stderr.read()


@pytest.mark.slow
def test_sigterm_with_inference_stuck_in_c_ends_by_the_deadline(
    bundle: Path, tmp_path: Path
) -> None:
    # Python runs signal handlers only between bytecodes: the warm-up inference below never
    # returns to Python, so only the wake-up-fd watcher can end the process (drain_s 0 ->
    # deadline 5 s). Before it existed, the process ignored SIGTERM until SIGKILL.
    stuck = _stuck_bundle(bundle, tmp_path / "stuck")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[model]\nbundle = "{stuck}"\n[source]\nuri = "synthetic://?seconds=600"\n'
        '[face]\ndetector = "none"\n[metrics]\nenabled = false\n[service]\ndrain_s = 0.0\n'
    )
    proc = subprocess.Popen(
        [EDGE_MER, "-v", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The runner is being chosen: the handlers are in place; 2 s later the warm-up spins.
    took = _stop_after(proc, lambda line: "edge_mer.runners" in line, 2.0)
    assert took < 8, took
    err = proc.stderr.read()
    if proc.returncode == 1:  # stuck in C: the deadline ended it
        assert "did not stop within 5 s of the stop signal" in err
    else:  # the signal landed between two C calls: the start-up unwound
        assert proc.returncode == 0, err
