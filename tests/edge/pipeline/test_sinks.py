"""Sinks against real files, a real tmpfs where we may mount one, and a real mosquitto."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge_mer.pipeline.sinks import JsonlSink, MultiSink, StdoutSink

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)


def rec(i: int, pad: int = 0) -> dict:
    return {"type": "micro_expression", "i": i, "pad": "x" * pad}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(cond, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --- JSONL ---------------------------------------------------------------------------


def test_jsonl_rotation_keeps_n_backups_all_valid(tmp_path):
    path = tmp_path / "events.jsonl"
    with JsonlSink(path, max_bytes=2000, backups=3) as sink:
        for i in range(200):
            sink.emit(rec(i, pad=40))
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [
        "events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3",
    ]  # fmt: skip
    assert sink.emitted == 200 and sink.dropped == 0 and sink.rotations > 3
    seen = []
    for f in [path.with_name("events.jsonl.3"), path.with_name("events.jsonl.2"),
              path.with_name("events.jsonl.1"), path]:  # fmt: skip
        assert f.stat().st_size <= 2000
        seen += [r["i"] for r in read_lines(f)]
    assert seen == list(range(seen[0], 200))  # newest kept, in order, nothing torn


def test_jsonl_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "events.jsonl"
    sinks = [JsonlSink(path, max_bytes=1 << 30, backups=1) for _ in range(4)]  # 4 fds
    shared = JsonlSink(tmp_path / "shared.jsonl")  # one sink, 4 threads

    def work(k: int) -> None:
        for i in range(500):
            sinks[k].emit({"w": k, "i": i, "pad": "y" * (i % 700)})
            shared.emit({"w": k, "i": i, "pad": "z" * (i % 700)})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for s in [*sinks, shared]:
        s.close()
    for f in (path, tmp_path / "shared.jsonl"):
        lines = read_lines(f)
        assert len(lines) == 2000
        for k in range(4):
            assert [r["i"] for r in lines if r["w"] == k] == list(range(500))


def test_jsonl_disk_full_drops_counts_and_recovers(tmp_path, monkeypatch, caplog):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, backlog=2, retry_s=0.0)
    sink.emit(rec(0))
    real_write = os.write
    full = True

    def write(fd, data):
        if full and fd == sink._fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    for i in range(1, 6):
        sink.emit(rec(i))  # never raises
    assert sink.dropped == 3 and sink.errors >= 1
    assert sum("write failed" in r.message for r in caplog.records) == 1  # once per episode
    full = False
    sink.emit(rec(6))
    sink.close()
    assert [r["i"] for r in read_lines(path)] == [0, 4, 5, 6]  # backlog kept, in order
    assert sink.emitted == 4 and sink.dropped == 3
    assert any("writable again" in r.message for r in caplog.records)


def test_jsonl_unserialisable_record_is_counted_not_raised(tmp_path):
    sink = JsonlSink(tmp_path / "e.jsonl")
    sink.emit({"score": float("nan")})
    sink.emit({"obj": object()})
    sink.emit(rec(1))
    sink.close()
    assert (sink.errors, sink.dropped, sink.emitted) == (2, 2, 1)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10)


def test_jsonl_real_full_tmpfs(tiny_tmpfs):
    filler = tiny_tmpfs / "filler"
    path = tiny_tmpfs / "events.jsonl"
    sink = JsonlSink(path, max_bytes=1 << 20, backlog=5, retry_s=0.0)
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * (1 << 20))  # fill the 64 KiB filesystem
    for i in range(50):
        sink.emit(rec(i, pad=300))
    assert sink.dropped > 0
    filler.unlink()
    sink.emit(rec(999))
    sink.close()
    lines = read_lines(path)  # every line complete JSON, even across the full disk
    assert lines[-1]["i"] == 999
    assert len(lines) == 50 + 1 - sink.dropped


def test_stdout_and_multisink_isolate_failures():
    buf = io.StringIO()

    class Broken:
        emitted = dropped = errors = 0

        def emit(self, record):
            raise RuntimeError("boom")

        def close(self):
            raise RuntimeError("boom")

    out = StdoutSink(buf)
    multi = MultiSink([Broken(), out])
    for i in range(3):
        multi.emit(rec(i))
    multi.close()
    assert [json.loads(x)["i"] for x in buf.getvalue().splitlines()] == [0, 1, 2]
    assert multi.errors == 4 and multi.emitted == 3
    buf.close()  # a closed pipe: counted, not raised
    out2 = StdoutSink(buf)
    out2.emit(rec(0))
    assert out2.dropped == 1 and out2.errors == 1


# --- MQTT against a real mosquitto -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.conf = tmp / f"mosquitto-{port}.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def up() -> bool:
            with socket.socket() as s:
                s.settimeout(0.2)
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        if not wait_for(up, 5.0):
            self.stop()
            pytest.fail("mosquitto did not start listening within 5 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed")
    b = Broker(tmp_path, free_port())
    try:
        yield b
    finally:
        b.stop()


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.got: list[dict] = []
        self._ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self._ready.set()
        self.c.on_message = lambda c, u, m: self.got.append(json.loads(m.payload))
        self.c.reconnect_delay_set(1, 1)
        self.c.connect_async("127.0.0.1", port, 10)
        self.c.loop_start()
        assert self._ready.wait(10), "subscriber did not subscribe within 10 s"

    def ids(self) -> set[int]:
        return {r["i"] for r in list(self.got)}

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def mqtt_sink(port: int, **kw):
    from edge_mer.pipeline.mqtt import MqttSink

    kw.setdefault("reconnect_max_s", 1)
    return MqttSink("127.0.0.1", port, topic="edge-mer/test", **kw)


def test_mqtt_delivers_records(broker):
    broker.start()
    sub = Subscriber(broker.port, "edge-mer/test")
    sink = mqtt_sink(broker.port)
    try:
        for i in range(20):
            sink.emit(rec(i))
        assert wait_for(lambda: sub.ids() == set(range(20)), 10)
        assert sink.flush(5) and sink.emitted == 20 and sink.dropped == 0
    finally:
        sink.close()
        sub.close()


def test_mqtt_broker_down_at_start_then_up(broker, caplog):
    t0 = time.monotonic()
    sink = mqtt_sink(broker.port)
    try:
        for i in range(10):
            sink.emit(rec(i))
        assert time.monotonic() - t0 < 1.0  # neither construction nor emit blocks
        assert not sink.connected and sink.queued == 10
        assert wait_for(lambda: any("unreachable" in r.message for r in caplog.records), 5)
        broker.start()
        sub = Subscriber(broker.port, "edge-mer/test")
        assert wait_for(lambda: sink.connected, 10)
        # Logged on paho's thread just after `connected` flips: wait for it, don't race it.
        assert wait_for(lambda: any("connected again" in r.message for r in caplog.records), 5)
        sink.emit(rec(10))
        assert wait_for(lambda: sink.queued == 0, 10)
        sink.emit(rec(11))
        assert wait_for(lambda: 11 in sub.ids(), 10)
        # Queued before the subscriber existed: delivered to the broker (acknowledged).
        assert sink.emitted == 12 and sink.dropped == 0
        sub.close()
    finally:
        sink.close()


def test_mqtt_reconnects_after_broker_restart(broker):
    broker.start()
    sink = mqtt_sink(broker.port)
    try:
        assert wait_for(lambda: sink.connected, 10)
        sink.emit(rec(0))
        assert sink.flush(5)
        broker.stop()
        assert wait_for(lambda: not sink.connected, 10)
        for i in range(1, 6):
            sink.emit(rec(i))  # queued while the broker is gone
        broker.start()
        sub = Subscriber(broker.port, "edge-mer/test")
        assert wait_for(lambda: sink.connected, 10)
        assert sink.flush(10)
        sink.emit(rec(6))
        assert wait_for(lambda: 6 in sub.ids(), 10)
        assert sink.emitted == 7 and sink.connects >= 2
        sub.close()
    finally:
        sink.close()


def test_mqtt_bounded_queue_drops_oldest(broker):
    sink = mqtt_sink(broker.port, queue_size=5)
    try:
        for i in range(12):
            sink.emit(rec(i))
        assert sink.dropped == 7 and sink.queued == 5
        broker.start()
        sub = Subscriber(broker.port, "edge-mer/test")
        assert wait_for(lambda: sink.connected, 10)
        # Re-publish after the subscriber is there is not promised; check the broker acks.
        assert sink.flush(10) and sink.emitted == 5
        sub.close()
    finally:
        sink.close()
    assert sink.dropped == 7


def test_mqtt_missing_paho_is_a_clear_error(monkeypatch):
    import builtins

    from edge_mer.errors import MissingDependencyError
    from edge_mer.pipeline.mqtt import MqttSink

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name.startswith("paho"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match=r"edge-mer\[mqtt\]"):
        MqttSink("127.0.0.1", 1)


def test_core_modules_do_not_import_heavy_dependencies():
    code = (
        "import sys; import edge_mer.pipeline.spotter, edge_mer.pipeline.sinks, "
        "edge_mer.pipeline.mqtt, "
        "edge_mer.pipeline.telemetry, "
        "edge_mer.pipeline.spotting_eval; "
        "bad = [m for m in ('torch', 'cv2', 'paho') if m in sys.modules]; "
        "assert not bad, bad"
    )
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_jsonl_disk_full_without_backlog_logs_once(tmp_path, monkeypatch, caplog):
    sink = JsonlSink(tmp_path / "e.jsonl", backlog=0, retry_s=0.0)
    real_write = os.write
    monkeypatch.setattr(
        os,
        "write",
        lambda fd, data: (
            (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
            if fd == sink._fd
            else real_write(fd, data)
        ),
    )
    for i in range(20):
        sink.emit(rec(i))
    assert sink.dropped == 20 and sink.emitted == 0
    assert sum("write failed" in r.message for r in caplog.records) == 1
    monkeypatch.setattr(os, "write", real_write)
    sink.emit(rec(20))
    sink.close()
    assert [r["i"] for r in read_lines(tmp_path / "e.jsonl")] == [20]
