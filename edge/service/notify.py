"""sd_notify without libsystemd and a progress-gated watchdog heartbeat.

The notify protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram of newline-separated
``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET`` (a leading ``@`` names a Linux abstract
socket). systemd documents it as a stable interface meant to be reimplemented. Sending is
never fatal: outside systemd, or on any socket error, the call logs at debug level and
returns ``False``.

Liveness (DESIGN §7): :class:`Heartbeat` sends ``WATCHDOG=1`` only when the caller reports
that the pipeline advanced, at most every half watchdog interval, and never while the last
inference is older than the stall deadline. A timer thread that pings regardless would
keep a hung daemon alive, which is exactly what the watchdog exists to catch.

Stdlib only: importing this module must stay cheap (no numpy, torch, cv2).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(name: str) -> str | bytes:
    # '@name' is the systemd spelling of an abstract socket; the kernel wants a NUL byte.
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def sd_notify(message: str, *, socket_name: str | None = None) -> bool:
    """Send one notify datagram; return True when it was sent.

    Args:
        message: newline-separated ``KEY=VALUE`` lines, e.g. ``"READY=1\\nSTATUS=up"``.
        socket_name: the socket to use; default ``$NOTIFY_SOCKET`` (unset: do nothing).
    """
    name = socket_name if socket_name is not None else os.environ.get("NOTIFY_SOCKET")
    if not name:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), _address(name))
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", name, exc)
        return False
    return True


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without the notify/watchdog variables.

    Pass it as ``env=`` to subprocesses so a child cannot speak for the service (systemd
    would drop it with ``NotifyAccess=main`` anyway, and log a warning each time).
    """
    src = os.environ if environ is None else environ
    return {k: v for k, v in src.items() if k not in NOTIFY_ENV}


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Notifier:
    """The service side of sd_notify. Every method is a no-op outside systemd.

    Args:
        socket_name: default ``$NOTIFY_SOCKET``, read once at construction.
    """

    def __init__(self, socket_name: str | None = None) -> None:
        self.socket_name = (
            socket_name if socket_name is not None else os.environ.get("NOTIFY_SOCKET")
        )

    @property
    def enabled(self) -> bool:
        return bool(self.socket_name)

    def send(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram (``STATUS`` is folded onto one line)."""
        if not self.socket_name:
            return False
        lines = []
        for key, value in fields.items():
            text = _one_line(str(value)) if key == "STATUS" else str(value)
            lines.append(f"{key}={text}")
        return sd_notify("\n".join(lines), socket_name=self.socket_name)

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with ``STATUS`` in the same datagram): config, bundle and warm-up done."""
        fields: dict[str, object] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        """One free-form status line, shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``. Prefer :class:`Heartbeat`, which sends it only on progress."""
        return self.send(WATCHDOG=1)

    def watchdog_trigger(self) -> bool:
        """``WATCHDOG=trigger``: declare a fatal hang now; systemd acts as on a missed ping."""
        return self.send(WATCHDOG="trigger")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more to finish start-up or stop."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` before a SIGHUP reload; call :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` rides along because systemd >= 253 requires it; older ones ignore it.
        """
        fields: dict[str, object] = {
            "RELOADING": 1,
            "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
        }
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def stopping(self, status: str | None = "stopping") -> bool:
        """``STOPPING=1`` on SIGTERM, before draining."""
        fields: dict[str, object] = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)


@dataclass(frozen=True)
class WatchdogPolicy:
    """What systemd asked for: ``interval_s`` from ``WATCHDOG_USEC`` (None = no watchdog)."""

    interval_s: float | None

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    @property
    def ping_every_s(self) -> float | None:
        """Half the interval: the cadence systemd recommends."""
        return None if self.interval_s is None else self.interval_s / 2

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> WatchdogPolicy:
        """Read ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (ignored unless it is ``pid``, default ours).

        A missing, malformed or zero ``WATCHDOG_USEC``, or a ``WATCHDOG_PID`` naming another
        process (the variables leaked into a child), means no watchdog.
        """
        env = os.environ if environ is None else environ
        raw = env.get("WATCHDOG_USEC")
        if not raw:
            return cls(None)
        want_pid = os.getpid() if pid is None else pid
        owner = env.get("WATCHDOG_PID")
        if owner:
            try:
                if int(owner) != want_pid:
                    log.debug("WATCHDOG_PID=%s is not us (%d): watchdog off", owner, want_pid)
                    return cls(None)
            except ValueError:
                log.debug("WATCHDOG_PID=%r is not a pid: watchdog off", owner)
                return cls(None)
        try:
            usec = int(raw)
        except ValueError:
            log.debug("WATCHDOG_USEC=%r is not an integer: watchdog off", raw)
            return cls(None)
        return cls(usec / 1_000_000 if usec > 0 else None)


class Heartbeat:
    """Sends ``WATCHDOG=1`` only when the pipeline made progress. Not thread-safe: call
    :meth:`beat` from the one loop that owns liveness (the daemon's main loop).

    Args:
        notifier: where pings go.
        policy: from :meth:`WatchdogPolicy.from_env`; disabled means :meth:`beat` never sends
            (it still tracks :attr:`last_reason` for STATUS).
        stall_s: an inference older than this is a stall: no more pings, systemd restarts us.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        notifier: Notifier,
        policy: WatchdogPolicy,
        *,
        stall_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.policy = policy
        self.stall_s = stall_s
        self._clock = clock
        self._last_ping: float | None = None
        self._progress_at_ping: int | None = None
        self.pings = 0
        self.withheld = 0
        self.last_reason = "no beat yet"

    def beat(self, progress: int, *, last_inference: float | None = None) -> bool:
        """Report the loop's progress; send ``WATCHDOG=1`` when it is due and deserved.

        Args:
            progress: a counter that only grows while the loop does useful work: frames
                processed plus camera reopen attempts (the retry loop turning is progress).
            last_inference: clock time the last inference finished, or None when none is
                expected now (camera offline, nothing queued). Older than ``stall_s``
                withholds the ping even if frames still arrive.

        Returns:
            True when a ping was sent.
        """
        now = self._clock()
        every = self.policy.ping_every_s
        if self._progress_at_ping is not None and progress <= self._progress_at_ping:
            self.last_reason = "no progress since last ping"
            return self._withhold()
        if last_inference is not None and now - last_inference > self.stall_s:
            self.last_reason = f"inference stalled for {now - last_inference:.1f}s"
            return self._withhold()
        self.last_reason = "ok"
        if every is None:
            return False
        if self._last_ping is not None and now - self._last_ping < every:
            return False
        if not self.notifier.watchdog():
            return False
        self._last_ping = now
        self._progress_at_ping = progress
        self.pings += 1
        return True

    def _withhold(self) -> bool:
        if self.policy.enabled:
            self.withheld += 1
        return False

    @property
    def healthy(self) -> bool:
        """False after the last beat withheld a ping (stall or no progress)."""
        return self.last_reason in ("ok", "no beat yet")
