"""sd_notify over a real datagram socket and the progress-gated heartbeat."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_mer.service.notify import (
    Heartbeat,
    Notifier,
    WatchdogPolicy,
    child_environment,
    sd_notify,
)


class Listener:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock, self.name = sock, name
        sock.settimeout(1.0)

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(1.0)
        return out


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(tmp_path / "notify.sock")
        sock.bind(addr)
        name = addr
    else:
        tag = f"edge-mer-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + tag.encode())
        name = "@" + tag
    try:
        yield Listener(sock, name)
    finally:
        sock.close()


def test_ready_and_status_travel_in_one_datagram(listener: Listener) -> None:
    n = Notifier(listener.name)
    assert n.ready("warm-up done\nfps 30")
    assert listener.recv() == "READY=1\nSTATUS=warm-up done fps 30"
    assert n.status("camera offline, retry in 2.0s")
    assert listener.recv() == "STATUS=camera offline, retry in 2.0s"
    assert n.stopping()
    assert listener.recv() == "STOPPING=1\nSTATUS=stopping"
    assert n.reloading()
    msg = listener.recv().split("\n")
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
    assert n.extend_timeout(1.5)
    assert listener.recv() == "EXTEND_TIMEOUT_USEC=1500000"


def test_env_socket_is_used(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.name)
    assert sd_notify("WATCHDOG=1")
    assert listener.recv() == "WATCHDOG=1"
    assert Notifier().watchdog()
    assert listener.recv() == "WATCHDOG=1"


def test_no_socket_or_dead_socket_is_never_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify("READY=1")
    assert not Notifier().enabled
    assert not Notifier().ready("x")
    assert not Notifier(str(tmp_path / "nobody-listens")).ready("x")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_watchdog_pings_only_on_progress_at_half_interval(listener: Listener) -> None:
    clock = Clock()
    hb = Heartbeat(Notifier(listener.name), WatchdogPolicy(10.0), stall_s=8.0, clock=clock)
    assert hb.beat(1, last_inference=clock.t)  # first progress: ping
    assert listener.pending() == ["WATCHDOG=1"]
    sent = []
    for step in range(1, 41):  # 20 s of a loop that advances every 0.5 s
        clock.t += 0.5
        sent.append(hb.beat(1 + step, last_inference=clock.t))
    # Pings at most every 5 s (interval/2): at 5, 10, 15, 20 s.
    assert [i for i, s in enumerate(sent, 1) if s] == [10, 20, 30, 40]
    assert listener.pending() == ["WATCHDOG=1"] * 4
    # The loop keeps turning but the counter is stuck: no ping however long we wait.
    for _ in range(30):
        clock.t += 1.0
        assert not hb.beat(41, last_inference=clock.t)
    assert listener.pending() == []
    assert not hb.healthy and "no progress" in hb.last_reason


def test_watchdog_stops_when_inference_stalls(listener: Listener) -> None:
    clock = Clock()
    hb = Heartbeat(Notifier(listener.name), WatchdogPolicy(4.0), stall_s=3.0, clock=clock)
    last_inference = clock.t
    assert hb.beat(1, last_inference=last_inference)
    frames = 1
    for _ in range(10):  # frames still arrive, but inference hung at t=1000
        clock.t += 1.0
        frames += 1
        hb.beat(frames, last_inference=last_inference)
    assert listener.pending() == ["WATCHDOG=1", "WATCHDOG=1"]  # t=1000 and t=1002 only
    assert "stalled" in hb.last_reason
    # Camera offline: no inference expected, reopen attempts count as progress.
    clock.t += 2.0
    assert hb.beat(frames + 1, last_inference=None)


def test_watchdog_policy_from_env() -> None:
    me = os.getpid()
    assert WatchdogPolicy.from_env({}).interval_s is None
    p = WatchdogPolicy.from_env({"WATCHDOG_USEC": "10000000"})
    assert p.interval_s == 10.0 and p.ping_every_s == 5.0
    assert WatchdogPolicy.from_env({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(me)}).enabled
    other = WatchdogPolicy.from_env({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(me + 1)})
    assert not other.enabled
    assert not WatchdogPolicy.from_env({"WATCHDOG_USEC": "soon"}).enabled
    assert not WatchdogPolicy.from_env({"WATCHDOG_USEC": "0"}).enabled


def test_pid_mismatch_means_no_ping(listener: Listener) -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    hb = Heartbeat(Notifier(listener.name), WatchdogPolicy.from_env(env), stall_s=5.0)
    for i in range(1, 5):
        assert not hb.beat(i)
    assert listener.pending() == []


def test_child_environment_strips_notify_variables() -> None:
    env = {"PATH": "/bin", "NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2"}
    assert child_environment(env) == {"PATH": "/bin"}
    code = "import os; print(sorted(k for k in os.environ if 'NOTIFY' in k or 'WATCHDOG' in k))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_environment({**os.environ, **env}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_import_stays_light() -> None:
    code = (
        "import sys, edge_mer.service.notify, edge_mer.config; "
        "bad = [m for m in ('torch', 'cv2', 'onnxruntime', 'numpy') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
