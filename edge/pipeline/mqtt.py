"""The MQTT event sink: a bounded queue drained by paho-mqtt's network thread.

``emit`` never blocks the frame loop: when the broker is away, records wait in a bounded queue
(oldest dropped and counted) while paho reconnects with backoff. paho-mqtt is imported on
construction, so the core imports without it (extra ``mqtt``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from typing import Any

from edge_mer.errors import InputError, MissingDependencyError
from edge_mer.pipeline.sinks import encode_record

log = logging.getLogger(__name__)


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
