"""Keeps a TLS session book (tlsresume.SessionBook) on disk, so that a restarted gateway
still lets resume the TLS 1.2 sessions it saw issued: one it forgot is refused, and Chromium
offers a refused ticket again until it expires. Written every few minutes and on the way
out; readable by the owner and the schoolgate group only, since it names the sites behind
each server address.

The proxy and the fast path each keep one, and each reads the other's as its `peer`: an
address moves between them (a pupil's refused hello withdraws it from the fast path for an
hour; a name becomes catalogued), and a session one saw issued is the other's to vouch for then
(adversarial pass a34: every session made through one was refused by the other)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from schoolgate.files import write_atomic
from schoolgate.sniffer.tlsresume import SessionBook

log = logging.getLogger("schoolgate.sessions")

SAVE_EVERY_S: Final = 300.0  # what a power cut may lose
PEER_EVERY_S: Final = 10.0  # how often the other path's book is looked at (a stat)
# How soon a session issued is in the journal the other path reads (a42 F4: at a second, 3 of 6
# resumptions in the second after a move were refused); an idle flush writes nothing.
JOURNAL_EVERY_S: Final = 0.2
# An address moving to the other path: the book is written first, at most this often (a pupil
# can make one move a second; each write is the whole book): a move sooner waits its turn.
HANDOFF_GAP_S: Final = 2.0
MISS_GAP_S: Final = 0.25  # a session in neither book: the peer's file looked at again, at most
MISS_COST_SHARE: Final = 0.05  # of the time, at most, spent reading the peer's book on misses
PROXY_FILE: Final = "tls-sessions.json"  # in data_dir
FAST_PATH_FILE: Final = "fastpath-tls-sessions.json"
# Set by the installed units: the fast path keeps its book in its own state directory (its
# file system is read-only elsewhere), where the proxy reads it.
FAST_PATH_ENV: Final = "SCHOOLGATE_FASTPATH_SESSIONS"


def proxy_sessions(data_dir: Path) -> Path:
    return data_dir / PROXY_FILE


def fast_path_sessions(data_dir: Path) -> Path:
    return Path(os.environ.get(FAST_PATH_ENV) or data_dir / FAST_PATH_FILE)


class SessionKeeper:
    """`load()` once at start; `save()` when `due()` (which takes the turn) and on the way out,
    and `refresh()` the peer when `peer_due()`, from any thread."""

    def __init__(
        self,
        book: SessionBook,
        path: Path,
        *,
        peer: Path | None = None,
        every_s: float = SAVE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.book = book
        self.timer = timer
        self.path = path
        self.peer = peer
        self.every_s = every_s
        self.clock = clock
        self.last = clock()
        self._peer_looked = float("-inf")
        self._peer_missed = float("-inf")
        self._refresh_s = 0.0  # how long the last read of the peer's book on a miss took
        if peer is not None:
            book.on_miss = self.on_miss
        self._peer_stamp: tuple[int, ...] | None = None
        self._saved_changes: int | None = None  # book.changes at the last write

    def load(self) -> int:
        """The sessions restored; a missing file is a first start, a broken one is logged and
        left for the next save to replace."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = _as_dump([])  # the journal may still hold what was issued before a crash
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
        lines = _journal_lines(journal_of(self.path))  # issued after the last dump
        if lines:
            with contextlib.suppress(ValueError):
                restored += self.book.restore(_as_dump(lines))
        log.info("schoolgate: %d TLS 1.2 sessions restored from %s", restored, self.path)
        return restored

    def due(self) -> bool:
        if self.clock() - self.last < self.every_s:
            return False
        self.last = self.clock()
        return True

    def handoff_wait(self) -> float:
        """Seconds before the book may be written for a hand-off (HANDOFF_GAP_S apart)."""
        return max(0.0, HANDOFF_GAP_S - (self.clock() - self.last))

    def handoff(self) -> bool:
        """Write the book before an address moves to the other path (which reads it on a
        miss), unless it was written within HANDOFF_GAP_S; whether it was written. A move
        sooner waits `handoff_wait()` for it: skipped, the sessions issued since the last write
        were refused by the other path until the periodic one (a37 R3)."""
        if self.handoff_wait() > 0:
            return False
        return self.save()

    def peer_due(self) -> bool:
        if self.peer is None or self.clock() - self._peer_looked < PEER_EVERY_S:
            return False
        self._peer_looked = self.clock()
        return True

    def on_miss(self) -> None:
        """A session in neither book: look at the peer's file again (at most every
        MISS_GAP_S), since an address may have just moved here. The proxy does this on its
        event loop, and a full book takes a good part of a second to read on a Pi: a pupil who
        moves addresses and offers unknown tickets in turn could make it read one every
        second, so the gap grows to MISS_COST_SHARE times the last read's time."""
        gap = max(MISS_GAP_S, self._refresh_s / MISS_COST_SHARE)
        if self.peer is not None and self.clock() - self._peer_missed >= gap:
            self._peer_missed = self.clock()
            started = self.timer()
            if self.refresh():
                self._refresh_s = self.timer() - started

    def refresh(self) -> bool:
        """Read the peer's book and its journal again if either changed; whether it did."""
        assert self.peer is not None
        journal = journal_of(self.peer)
        stamp = (*_stamp(self.peer), *_stamp(journal))
        if stamp == self._peer_stamp:
            return False
        self._peer_stamp = stamp
        lines = _journal_lines(journal)
        try:
            data: bytes | None = self.peer.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as error:
            log.info("schoolgate: the other path's TLS sessions are not readable at %s (%s)",
                     self.peer, error.strerror or error)  # fmt: skip
            data = None
        peer = SessionBook(size=self.book.size, lifetime=self.book.lifetime,
                           device_share=self.book.device_share, clock=self.book.clock)  # fmt: skip
        read = False
        if data is not None:
            try:
                peer.restore(data)
                read = True
            except ValueError as error:
                log.warning("schoolgate: %s ignored (%s)", self.peer, error)
                peer = self.book.peer or peer  # what was read stays
        if lines:
            with contextlib.suppress(ValueError):
                peer.restore(_as_dump(lines))
                read = True
        if read:
            self.book.peer = peer
        return read

    def flush_journal(self) -> bool:
        """Append the sessions issued since the last flush to the journal beside the book, so
        that the other path knows them within a second, not at the next dump: an address the
        proxy carried moves to the fast path as soon as a device resolves its name through the
        gateway, and its sessions were refused there until the proxy's next dump, minutes
        later (adversarial pass a40 F5). Whether anything was written."""
        entries = self.book.take_fresh()
        if not entries:
            return False
        data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
        try:
            descriptor = os.open(journal_of(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                 0o640)  # fmt: skip
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)
        except OSError as error:
            log.warning("schoolgate: cannot write %s (%s)", journal_of(self.path),
                        error.strerror or error)  # fmt: skip
            return False
        return True

    def save(self) -> bool:
        """Write the whole book, unless nothing was issued since the last write (a quiet night
        costs an SD card no writes; expired sessions are dropped when read)."""
        self.last = self.clock()
        changes = self.book.changes
        if changes == self._saved_changes:
            return True
        self.book.take_fresh()  # the dump holds them: the journal starts again after it
        try:
            write_atomic(self.path, self.book.dump(), 0o640)
            write_atomic(journal_of(self.path), b"", 0o640)
        except OSError as error:
            log.warning("schoolgate: cannot write %s (%s): a restart will forget the TLS 1.2 "
                        "sessions issued so far", self.path, error.strerror or error)  # fmt: skip
            return False
        self._saved_changes = changes
        return True


def journal_of(book: Path) -> Path:
    """The sessions issued since the book was last written, one JSON line each."""
    return book.with_name(book.name + ".journal")


def _stamp(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)


def _journal_lines(path: Path) -> list[object]:
    """A journal's entries; a torn or damaged line (a crash mid-write) is skipped."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return []
    entries: list[object] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str):
            entries.append(entry)
    return entries


def _as_dump(entries: list[object]) -> bytes:
    return json.dumps({"version": 1, "sessions": entries}).encode()
