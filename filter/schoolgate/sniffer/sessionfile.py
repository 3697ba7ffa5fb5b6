"""Keeps a TLS session book (tlsresume.SessionBook) on disk, so that a restarted gateway
still lets resume the TLS 1.2 sessions it saw issued: one it forgot is refused, and Chromium
offers a refused ticket again until it expires. Written every few minutes and on the way
out; owner-only, since it names the sites behind each server address."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from schoolgate.files import write_atomic
from schoolgate.sniffer.tlsresume import SessionBook

log = logging.getLogger("schoolgate.sessions")

SAVE_EVERY_S: Final = 300.0  # what a power cut may lose


class SessionKeeper:
    """`load()` once at start; `save()` when `due()` (which takes the turn) and on the way out,
    from any thread."""

    def __init__(
        self,
        book: SessionBook,
        path: Path,
        *,
        every_s: float = SAVE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.book = book
        self.path = path
        self.every_s = every_s
        self.clock = clock
        self.last = clock()

    def load(self) -> int:
        """The sessions restored; a missing file is a first start, a broken one is logged and
        left for the next save to replace."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as error:
            why = error.strerror or error
            log.warning("schoolgate: cannot read %s (%s): TLS 1.2 sessions issued before the "
                        "restart will be refused", self.path, why)  # fmt: skip
            return 0
        try:
            restored = self.book.restore(data)
        except ValueError as error:
            log.warning("schoolgate: %s ignored (%s): TLS 1.2 sessions issued before the "
                        "restart will be refused", self.path, error)  # fmt: skip
            return 0
        log.info("schoolgate: %d TLS 1.2 sessions restored from %s", restored, self.path)
        return restored

    def due(self) -> bool:
        if self.clock() - self.last < self.every_s:
            return False
        self.last = self.clock()
        return True

    def save(self) -> bool:
        self.last = self.clock()
        try:
            write_atomic(self.path, self.book.dump(), 0o600)
        except OSError as error:
            log.warning("schoolgate: cannot write %s (%s): a restart will forget the TLS 1.2 "
                        "sessions issued so far", self.path, error.strerror or error)  # fmt: skip
            return False
        return True
