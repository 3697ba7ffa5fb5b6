"""A bound on the whole of one delivery attempt, not on each socket read.

A socket timeout only bounds one read: a receiver that trickles its answer a byte at a time
keeps an attempt going for ever (adversarial pass a35 F8). `Deadline` shuts the attempt's socket
down when the attempt's time is up, which ends whatever read or write is blocked on it, for plain
TCP and TLS alike; the attempt then reports a timeout and is retried later.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType

# How often to look again for a socket that does not exist yet (connect and TLS handshake
# still running when the time ran out): it is shut down the moment it appears.
_RECHECK_S = 0.05


class Deadline:
    """Shuts down `sock()` once `seconds` have passed since `__enter__`, until `__exit__`."""

    def __init__(self, seconds: float, sock: Callable[[], socket.socket | None]) -> None:
        self.seconds = seconds
        self._sock = sock
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None
        self.expired = False

    def __enter__(self) -> Deadline:
        self._arm(self.seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._expire)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sock = self._sock()
            if sock is None:
                self._arm(_RECHECK_S)
                return
            # shutdown, not close: the fd stays valid for the thread blocked on it, which
            # wakes with EOF or an error and closes the connection itself.
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
