"""Where an alert goes when the outbox refuses it (disk full, read-only): a small JSON-lines file,
so that a restart does not lose what was only held in memory (adversarial pass a35 A9).

One line is far smaller than what SQLite needs to commit (new pages, the WAL), so it often still
fits on a nearly full disk; failing that it goes to the next place, another filesystem where
there is one (the audit log's directory, the service's runtime directory, a tmpfs that outlives
a restart of the service though not a reboot). The service reads the spool back into the outbox
as soon as the outbox takes alerts again, and at its next start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from schoolgate.alerts.model import AlertDetails
from schoolgate.files import append_line

log = logging.getLogger("schoolgate.alerts")

SPOOL_NAME = "alerts-spool.jsonl"
# One for the process: a reload runs two services side by side for a moment, and a line one
# appends while the other reads the spool back and removes it would be lost.
_LOCK = threading.RLock()


def spool_paths(outbox: Path, *dirs: Path | None) -> tuple[Path, ...]:
    """Beside the outbox first, then in each other directory given (duplicates dropped)."""
    paths = [outbox.with_name(outbox.name + ".spool.jsonl")]
    runtime = os.environ.get("RUNTIME_DIRECTORY")  # systemd's RuntimeDirectory=, a tmpfs
    for folder in (*dirs, Path(runtime.split(":")[0]) if runtime else None):
        if folder is not None and folder.resolve() != outbox.parent.resolve():
            paths.append(folder / SPOOL_NAME)
    return tuple(dict.fromkeys(paths))


class AlertSpool:
    """Append-only alert lines in the first of `paths` that takes them; read back in order."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)

    def locked(self) -> AbstractContextManager[object]:
        """Hold while reading the spool back and clearing it: no line is added meanwhile."""
        return _LOCK

    def add(self, details: AlertDetails, audit_id: str) -> Path | None:
        """Write one alert durably (fsynced); the path it went to, None when none took it."""
        line = json.dumps({"audit_id": audit_id, "details": details.to_json()}) + "\n"
        for path in self.paths:
            try:
                with _LOCK:
                    self._write(path, line.encode("utf-8"))
            except OSError as exc:
                log.error("alert for decision %s not spooled to %s: %s", audit_id, path, exc)
                continue
            return path
        return None

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: an alert names a pupil's device. A line the disk cuts short is taken back: left,
        # the next alert spooled would be glued onto it and skipped as damaged when read back.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            append_line(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def __iter__(self) -> Iterator[tuple[AlertDetails, str]]:
        """Every spooled alert, oldest first per file; a torn last line (a crash mid-write,
        never acknowledged) is skipped."""
        for path in self.paths:
            try:
                text = path.read_text("utf-8")
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.critical("the alert spool %s cannot be read: %s", path, exc)
                continue
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    yield AlertDetails.from_json(record["details"]), str(record["audit_id"])
                except (ValueError, KeyError, TypeError):
                    log.error("a damaged line in the alert spool %s was skipped", path)

    def __bool__(self) -> bool:
        return any(path.exists() for path in self.paths)

    def clear(self) -> None:
        """Remove the spool files (unlinking works on a full disk too)."""
        for path in self.paths:
            with suppress(FileNotFoundError):
                path.unlink()
