"""The audit log: one JSON line per decision (structlog), rotated and pruned as configured.

It records hashes and metadata, never media. Writing must never take the proxy down: a full disk
or a removed directory costs log lines (counted in `lost_records`), not decisions.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from schoolgate.files import append_line
from schoolgate.pipeline.settings import AuditConfig
from schoolgate.pipeline.verdict import Verdict

_log = logging.getLogger("schoolgate.audit")
LOST_SAID_EVERY_S = 60.0


class _CountingHandlerMixin(logging.handlers.BaseRotatingHandler):
    """Writes each record whole or not at all, and counts records it failed to write instead of
    printing a traceback per line."""

    lost = 0
    _lost_lock = threading.Lock()

    if TYPE_CHECKING:  # both rotating handlers have them; typeshed's base class does not

        def shouldRollover(self, record: logging.LogRecord) -> bool: ...
        def doRollover(self) -> None: ...

    _said_at = float("-inf")

    def handleError(self, record: logging.LogRecord) -> None:
        """Counted (`schoolgate_audit_lost_records`) and said in the service's log, at most
        once a minute: a failing write (a read-only file, EIO, quota) dropped records without
        a word while the DSL's alert named them (adversarial pass a41 F10)."""
        with self._lost_lock:
            self.lost += 1
            now = time.monotonic()
            if now - self._said_at < LOST_SAID_EVERY_S:
                return
            self._said_at = now
        decision = re.search(r'"id": "([0-9a-f]{8,})"', str(record.msg))
        why = sys.exc_info()[1]
        _log.critical(
            "AUDIT RECORD NOT WRITTEN to %s (%s): %s; %d lost since start. The decisions stand "
            "and their alerts are sent; fix the disk or the file's permissions",
            self.baseFilename, why or "unknown error",
            f"decision {decision[1]}" if decision else "a record", self.lost,
        )  # fmt: skip

    def _open(self) -> Any:
        # Readable too: append_line looks at the file's last byte. The folder is made again
        # when it was moved away while running (a43 F5: every later decision was lost).
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return open(self.baseFilename, "a+", encoding=self.encoding, errors=self.errors)

    def _reopen_if_moved(self) -> None:
        """The file was moved or deleted by hand (or by an outside logrotate): later lines went
        to the unlinked file, lost without a word until a reload (adversarial pass a41 F3).
        A new file is opened at the configured path, as WatchedFileHandler does."""
        if self.stream is None:
            return
        try:
            here = os.stat(self.baseFilename)
        except FileNotFoundError:
            here = None
        held = os.fstat(self.stream.fileno())
        if here is None or (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            self.stream.close()
            self.stream = None

    def emit(self, record: logging.LogRecord) -> None:
        """The stdlib writes through a buffer: on a full disk part of a line reached the file,
        the rest stayed buffered, and the next record was glued onto it, so two records were
        lost to one failure, one of them written after the disk had recovered (adversarial
        pass a39 F2). Here each line is one unbuffered write, taken back when it falls short."""
        try:
            try:
                if self.shouldRollover(record):
                    self.doRollover()
            except OSError as error:
                # A directory that takes no new file (permissions after a restore): the line
                # goes on the current file rather than nowhere (a41 F10: half of a burst lost).
                _log.error("audit log %s not rotated (%s): written on", self.baseFilename, error)
            self._reopen_if_moved()
            if self.stream is None:
                self.stream = self._open()
            append_line(self.stream.fileno(), (self.format(record) + "\n").encode("utf-8"))
        except Exception:
            self.handleError(record)


class _DailyHandler(_CountingHandlerMixin, logging.handlers.TimedRotatingFileHandler):
    pass


class _SizeHandler(_CountingHandlerMixin, logging.handlers.RotatingFileHandler):
    pass


def _handler(config: AuditConfig) -> _CountingHandlerMixin:
    config.path.parent.mkdir(parents=True, exist_ok=True)
    if config.rotate == "daily":
        # backupCount bounds the retention: older daily files are deleted at rollover.
        return _DailyHandler(
            config.path,
            when="midnight",
            backupCount=config.retention_days,
            encoding="utf-8",
            utc=True,
            delay=True,
        )
    return _SizeHandler(
        config.path,
        maxBytes=config.max_bytes,
        backupCount=config.backup_count,
        encoding="utf-8",
        delay=True,
    )


class AuditLog:
    """Writes decisions as JSON lines to the configured file."""

    def __init__(self, config: AuditConfig) -> None:
        self.path = config.path
        self._handler = _handler(config)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A private stdlib logger (not the root one) so mitmproxy's own logging never mixes in.
        stdlib_logger = logging.Logger(f"schoolgate.pipeline.audit.{id(self)}")
        stdlib_logger.addHandler(self._handler)
        stdlib_logger.propagate = False
        self._log = structlog.wrap_logger(
            stdlib_logger,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="logged_at"),
                structlog.processors.JSONRenderer(sort_keys=False),
            ],
        )

    @property
    def lost_records(self) -> int:
        return self._handler.lost

    def record(self, verdict: Verdict) -> None:
        self.event("decision", **verdict.to_dict())

    def event(self, event: str, **fields: Any) -> None:
        """Write any structured event (config reloads, model load failures, ...)."""
        try:
            self._log.info(event, **fields)
        except Exception:  # a broken log must not break a decision
            self._handler.handleError(logging.makeLogRecord({"msg": event}))

    def close(self) -> None:
        try:
            self._handler.close()
        except OSError:  # the final flush can hit the same full disk; those lines are lost too
            self._handler.handleError(logging.makeLogRecord({"msg": "close"}))


def read_records(path: Path) -> list[dict[str, Any]]:
    """Parse an audit file (tests and `schoolgate` tooling)."""
    import json

    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
