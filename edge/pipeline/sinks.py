"""Event sinks: where event records (DESIGN §6) go. JSONL file, stdout, fan-out; MQTT in
:mod:`edge_mer.pipeline.mqtt`.

Every sink's :meth:`emit` is called from the pipeline loop and never raises: a failing
output is counted (``dropped``, ``errors``) and logged at most once per episode, the way
picamera2 flags a broken output instead of raising in the frame path. Counters are plain
ints read by telemetry.
"""

from __future__ import annotations

import collections
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

from edge_mer.errors import InputError

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
    "MultiSink",
    "Sink",
    "StdoutSink",
    "encode_record",
]
