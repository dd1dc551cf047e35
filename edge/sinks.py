"""Event sinks: where event records (DESIGN §6) go. JSONL file, stdout, MQTT, fan-out.

Every sink's :meth:`emit` is called from the pipeline loop and never raises: a failing
output is counted (``dropped``, ``errors``) and logged at most once per episode, the way
picamera2 flags a broken output instead of raising in the frame path. Counters are plain
ints read by telemetry.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from edge_mer.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)

# Errors that mean "the disk cannot take this now" rather than "this sink is misconfigured".
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def encode_record(record: dict[str, Any]) -> bytes:
    """One compact JSON line (UTF-8, trailing newline). NaN/Inf are refused (ValueError):
    they are not JSON."""
    return (
        json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode("utf-8")


@runtime_checkable
class Sink(Protocol):
    """What the pipeline writes events to."""

    emitted: int  # records delivered (written; for MQTT QoS >= 1: acknowledged)
    dropped: int  # records given up (full disk, full queue, lost at close)
    errors: int  # failures (bad records, I/O errors), whether or not a retry saved the record

    def emit(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Append one JSON line per record to ``path``, rotating by size.

    Each record is a single ``os.write`` of a complete line on an ``O_APPEND`` descriptor,
    so lines from several writers never interleave. When the file would pass ``max_bytes``
    it is rotated: path.{N-1} -> path.N ... path -> path.1 (``backups`` files kept; 0 =
    truncate). On a full disk (ENOSPC, EDQUOT, EFBIG, EIO) up to ``backlog`` records are
    kept in memory, the rest dropped and counted, and the write retried every
    ``retry_s`` seconds; one warning when the episode starts, one when it ends. One
    JsonlSink per file; it is thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        backlog: int = 1000,
        retry_s: float = 1.0,
    ) -> None:
        if max_bytes < 1 or backups < 0:
            raise InputError(
                f"events file: need max_bytes >= 1 and backups >= 0, got {max_bytes!r}, {backups!r}"
            )
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self.retry_s = float(retry_s)
        self.emitted = 0
        self.dropped = 0
        self.errors = 0
        self.rotations = 0
        self._backlog: collections.deque[bytes] = collections.deque(maxlen=max(backlog, 0))
        self._failing_since: float | None = None
        self._next_retry = 0.0
        self._episode_dropped = 0
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._fd = self._open()
        except OSError as e:
            raise InputError(
                f"events file {str(self.path)!r} cannot be opened for appending: "
                f"{e.strerror}; pick a writable path"
            ) from None
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def emit(self, record: dict[str, Any]) -> None:
        try:
            line = encode_record(record)
        except (TypeError, ValueError) as e:
            self.errors += 1
            self.dropped += 1
            log.warning("events file %s: record not JSON-serialisable (%s); dropped", self.path, e)
            return
        with self._lock:
            if self._closed:
                self.dropped += 1
                return
            if self._failing_since is not None and (
                time.monotonic() < self._next_retry or not self._drain()
            ):
                self._keep(line)
                return
            if not self._write(line):
                self._keep(line)
            elif self._failing_since is not None:
                self._recovered()

    def _keep(self, line: bytes) -> None:
        bl = self._backlog
        if bl.maxlen == 0 or len(bl) == bl.maxlen:
            self.dropped += 1
            self._episode_dropped += 1
            if bl.maxlen == 0:
                return
        bl.append(line)

    def _drain(self) -> bool:
        """Write the backlog, oldest first; True once it is empty."""
        while self._backlog:
            if not self._write(self._backlog[0]):
                return False
            self._backlog.popleft()
        return True

    def _recovered(self) -> None:
        log.warning(
            "events file %s: writable again after %.1f s; %d record(s) dropped meanwhile",
            self.path,
            time.monotonic() - self._failing_since,
            self._episode_dropped,
        )
        self._failing_since = None
        self._episode_dropped = 0

    def _write(self, line: bytes) -> bool:
        """Write one complete line; False (and the failure recorded) if the disk refused."""
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
        try:
            n = os.write(self._fd, line)
            if n != len(line):
                # A short write leaves a partial line: finish it, or cut it off again.
                try:
                    m = os.write(self._fd, line[n:])
                except OSError:
                    self._truncate_partial(n)
                    raise
                if m != len(line) - n:
                    self._truncate_partial(n + m)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            self.errors += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                level = logging.WARNING if e.errno in _SPACE_ERRNOS else logging.ERROR
                log.log(
                    level,
                    "events file %s: write failed (%s); keeping up to %d record(s) in memory "
                    "and retrying every %.1f s",
                    self.path,
                    e.strerror or e,
                    self._backlog.maxlen,
                    self.retry_s,
                )
            self._next_retry = time.monotonic() + self.retry_s
            return False
        self._size += len(line)
        self.emitted += 1
        return True

    def _truncate_partial(self, n: int) -> None:
        try:
            end = os.lseek(self._fd, 0, os.SEEK_END)
            os.ftruncate(self._fd, max(end - n, 0))
        except OSError:
            pass

    def _rotate(self) -> None:
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            size = self._size
        if size == 0:
            self._size = 0
            return
        try:
            if self.backups == 0:
                os.ftruncate(self._fd, 0)
                self._size = 0
                self.rotations += 1
                return
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            fd = self._open()
        except OSError as e:
            # Keep appending to the current file; try again at the next record.
            self.errors += 1
            log.warning("events file %s: rotation failed (%s)", self.path, e.strerror or e)
            return
        os.close(self._fd)
        self._fd = fd
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._backlog:
                if self._drain() and self._failing_since is not None:
                    self._recovered()
                if self._backlog:
                    self.dropped += len(self._backlog)
                    log.warning(
                        "events file %s: %d record(s) lost at close (disk full)",
                        self.path,
                        len(self._backlog),
                    )
                    self._backlog.clear()
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StdoutSink:
    """One JSON line per record on ``stream`` (default sys.stdout), flushed per line.
    A closed pipe (``| head``) disables the sink instead of killing the loop."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._broken = False
        self.emitted = 0
        self.dropped = 0
        self.errors = 0

    def emit(self, record: dict[str, Any]) -> None:
        if self._broken:
            self.dropped += 1
            return
        try:
            line = encode_record(record).decode("utf-8")
        except (TypeError, ValueError) as e:
            self.errors += 1
            self.dropped += 1
            log.warning("stdout sink: record not JSON-serialisable (%s); dropped", e)
            return
        stream = self._stream or sys.stdout
        try:
            with self._lock:
                stream.write(line)
                stream.flush()
        except (OSError, ValueError) as e:
            self.errors += 1
            self.dropped += 1
            self._broken = True
            log.warning("stdout sink: output closed (%s); further events go nowhere", e)
            return
        self.emitted += 1

    def close(self) -> None:
        self._broken = True


class MqttSink:
    """Publish each record as one JSON message on ``topic`` (paho-mqtt >= 2).

    Never blocks the caller: records go into a bounded queue (``queue_size``; when full
    the oldest is dropped and counted) that a publisher thread hands to paho while the
    broker is connected, at most ``max_inflight`` unacknowledged at a time. paho's network
    thread connects asynchronously (a broker down at start only delays delivery),
    reconnects with backoff between ``reconnect_min_s`` and ``reconnect_max_s``, and with
    QoS 1 re-sends unacknowledged messages after a reconnect (at-least-once; duplicates
    are possible). ``emitted`` counts messages the broker acknowledged (QoS 0: written).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        topic: str = "edge-mer/events",
        qos: int = 1,
        client_id: str | None = None,
        queue_size: int = 1000,
        max_inflight: int = 20,
        keepalive: int = 30,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        close_timeout_s: float = 2.0,
    ) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError("paho-mqtt", "mqtt", "the MQTT sink") from None
        if qos not in (0, 1, 2):
            raise InputError(f"mqtt: qos={qos!r}; choose 0, 1 or 2")
        if not topic or any(c in topic for c in "#+"):
            raise InputError(f"mqtt: topic {topic!r} must be non-empty, without '#' or '+'")
        if queue_size < 1:
            raise InputError(f"mqtt: queue_size must be >= 1, got {queue_size!r}")
        self.host, self.port, self.topic, self.qos = host, int(port), topic, qos
        self.emitted = 0
        self.dropped = 0
        self.errors = 0
        self.connects = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_size = int(queue_size)
        self._max_inflight = max(1, int(max_inflight))
        self._inflight = 0
        self._connected = False
        self._closing = False
        self._down_logged = False
        self._close_timeout = close_timeout_s
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"edge-mer-{os.getpid()}-{id(self) & 0xFFFF:04x}",
            clean_session=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        # The bound is ours (self._queue); paho only ever holds what we handed it.
        self._client.max_inflight_messages_set(self._max_inflight)
        self._client.reconnect_delay_set(int(reconnect_min_s), int(reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        try:
            self._client.connect_async(host, self.port, keepalive)
        except (OSError, ValueError) as e:
            raise InputError(f"mqtt: cannot use broker {host!r}:{port!r}: {e}") from None
        self._client.loop_start()
        self._publisher = threading.Thread(
            target=self._publish_loop, name=f"mqtt-publish-{host}:{port}", daemon=True
        )
        self._publisher.start()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        """Records accepted but not yet acknowledged (queued + in flight)."""
        with self._cond:
            return len(self._queue) + self._inflight

    def emit(self, record: dict[str, Any]) -> None:
        try:
            payload = encode_record(record)[:-1]
        except (TypeError, ValueError) as e:
            self.errors += 1
            self.dropped += 1
            log.warning("mqtt sink: record not JSON-serialisable (%s); dropped", e)
            return
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(payload)
            self._cond.notify()

    # paho callbacks run on paho's network thread, some with paho's locks held: they only
    # touch our state under our condition and never call paho from inside it.
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.errors += 1
            log.warning("mqtt %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        with self._cond:
            self._connected = True
            self.connects += 1
            backlog = len(self._queue) + self._inflight
            self._cond.notify_all()
        if self._down_logged or self.connects > 1:
            log.warning(
                "mqtt %s:%d connected again; sending %d queued event(s)",
                self.host,
                self.port,
                backlog,
            )
        else:
            log.info("mqtt %s:%d connected", self.host, self.port)
        self._down_logged = False

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        with self._cond:
            self._connected = False
            closing = self._closing
        if not closing and not self._down_logged:
            self._down_logged = True
            log.warning(
                "mqtt %s:%d disconnected (%s); queueing up to %d event(s), reconnecting",
                self.host,
                self.port,
                reason,
                self._queue_size,
            )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._down_logged and not self._closing:
            self._down_logged = True
            log.warning(
                "mqtt %s:%d unreachable; queueing up to %d event(s), retrying",
                self.host,
                self.port,
                self._queue_size,
            )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._inflight = max(self._inflight - 1, 0)
            if getattr(reason, "is_failure", False):
                self.errors += 1
                self.dropped += 1
            else:
                self.emitted += 1
            self._cond.notify_all()

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._closing
                    or (self._connected and self._queue and self._inflight < self._max_inflight)
                ):
                    self._cond.wait(1.0)
                if not (self._connected and self._queue and self._inflight < self._max_inflight):
                    if self._closing:
                        return
                    continue
                payload = self._queue.popleft()
                self._inflight += 1
            try:
                info = self._client.publish(self.topic, payload, qos=self.qos)
                rc = info.rc
            except Exception as e:  # paho raises only on programming errors; keep running
                log.error("mqtt publish failed: %s", e)
                rc = -1
            if rc != 0 and (self.qos == 0 or rc != 4):  # 4 = MQTT_ERR_NO_CONN: paho keeps QoS>0
                with self._cond:
                    self._inflight -= 1
                    self.errors += 1
                    self._queue.appendleft(payload)
                    if len(self._queue) > self._queue_size:
                        self._queue.pop()
                        self.dropped += 1
                time.sleep(0.05)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything emitted so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Give queued records ``close_timeout_s`` to go out, then disconnect."""
        if self._closing:
            return
        if self._connected:
            self.flush(self._close_timeout)
        with self._cond:
            self._closing = True
            lost = len(self._queue) + self._inflight
            self._queue.clear()
            self.dropped += lost
            self._cond.notify_all()
        if lost:
            log.warning(
                "mqtt %s:%d: %d event(s) not delivered at close", self.host, self.port, lost
            )
        self._publisher.join(timeout=2.0)
        with contextlib.suppress(Exception):  # already down: nothing to say goodbye to
            self._client.disconnect()
        self._client.loop_stop()


class MultiSink:
    """Fan out to several sinks; one sink's failure never reaches the others or the loop."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.errors = 0
        self._logged: set[int] = set()

    @property
    def emitted(self) -> int:
        return sum(s.emitted for s in self.sinks)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sinks)

    def emit(self, record: dict[str, Any]) -> None:
        for i, s in enumerate(self.sinks):
            try:
                s.emit(record)
            except Exception as e:
                self.errors += 1
                if i not in self._logged:
                    self._logged.add(i)
                    log.error("sink %s failed: %s (further failures counted)", type(s).__name__, e)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:
                self.errors += 1
                log.error("sink %s failed to close: %s", type(s).__name__, e)


__all__ = [
    "JsonlSink",
    "MqttSink",
    "MultiSink",
    "Sink",
    "StdoutSink",
    "encode_record",
]
