"""SIGTERM / SIGINT / SIGHUP for the daemon: stop within a few seconds, whatever it is doing.

Three layers, from the gentlest:

1. In the frame loop, a stop signal only sets a flag; the loop checks it every frame or
   read timeout (0.25 s), then drains the sinks (``service.drain_s``) and exits 0.
2. While starting (loading the config, hashing the bundle, building and warming up the
   runners) there is no loop to check the flag: the first stop signal raises
   :class:`StopRequested` in the main thread, which unwinds the start-up (exit 0).
3. Python runs signal handlers only between bytecodes, so a main thread stuck in C code
   (an inference that never returns, a driver call) would never see either. The signal
   module also writes each signal's number to a wake-up socket from C; a watcher thread
   reads it and, once a stop signal came, ends the process with exit code 1 and a log line
   if it is still alive ``deadline_s`` later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """A stop signal arrived while the daemon was starting; unwinds the start-up. Not an
    Exception, like SystemExit: no ``except Exception`` on the way may swallow it."""


class StopSignals:
    """Installs the handlers on entry (main thread only; elsewhere it does nothing) and
    restores the previous ones on exit.

    Args:
        on_stop: called (in the main thread) for SIGTERM and SIGINT.
        on_reload: called for SIGHUP.
        deadline_s: after a stop signal, the process ends by itself this much later
            (None: never). May be changed while entered (the value at the signal counts),
            not switched on or off.
    """

    def __init__(
        self,
        on_stop: Callable[[], None],
        on_reload: Callable[[], None],
        *,
        deadline_s: float | None = None,
    ) -> None:
        self.on_stop, self.on_reload = on_stop, on_reload
        self.deadline_s = deadline_s
        self.starting = True  # set False once the frame loop runs; True again for a reload
        self._raised = False
        self._previous: list[tuple[int, Any]] = []
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._old_fd = -1
        self._done = threading.Event()

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.on_reload()
            return
        self.on_stop()
        if self.starting and not self._raised:
            self._raised = True  # once: a second signal must not break the unwinding
            raise StopRequested(signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            self._previous.append((sig, signal.signal(sig, self._handle)))
        if self.deadline_s is not None:
            r, w = socket.socketpair()
            w.setblocking(False)
            self._wakeup = (r, w)
            self._old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
            self._watcher = threading.Thread(
                target=self._watch, args=(r,), name="stop-deadline", daemon=True
            )
            self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_fd)
            r, w = self._wakeup
            with contextlib.suppress(OSError):
                w.send(b"\0")  # wakes the watcher, which sees _done and returns
            self._watcher.join(timeout=1.0)
            r.close()
            w.close()
            self._wakeup = None
        for sig, handler in self._previous:
            signal.signal(sig, handler)
        self._previous.clear()

    def _watch(self, r: socket.socket) -> None:
        stops = {int(s) for s in STOP_SIGNALS}
        while True:
            try:
                data = r.recv(64)
            except OSError:
                return
            if self._done.is_set() or not data:
                return  # a normal exit
            if any(b in stops for b in data):
                break
        if self._done.wait(self.deadline_s):
            return
        print(
            f"edge-mer: error: did not stop within {self.deadline_s:.0f} s of the stop signal "
            "(stuck in a call that does not return); exiting without draining",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
