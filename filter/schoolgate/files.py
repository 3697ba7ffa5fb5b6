"""Files the appliance writes for itself: whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write beside the target and rename, so a crash never leaves half a file."""
    temp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


class LockBusy(Exception):
    """Another process holds the lock for longer than we were willing to wait."""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait_s: float, poll_s: float = 0.1) -> Iterator[None]:
    """Hold an advisory lock on `path` (a file, created if missing, or a directory) for the
    block, waiting up to `wait_s` for another holder. The kernel drops it when the holder exits,
    also when it is killed. A directory's lock cannot be cleared by deleting a file."""
    fd = (
        os.open(path, os.O_RDONLY)
        if path.is_dir()
        else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    )
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(str(path)) from None
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def append_line(fd: int, line: bytes) -> None:
    """Append `line` to the file open (O_APPEND) on `fd`, whole or not at all. A fragment that
    an earlier failure (or a crash) left at the end of the file is ended first, so it stays one
    damaged line and this one is readable."""
    before = os.fstat(fd).st_size
    if before and os.pread(fd, 1, before - 1) != b"\n":
        line = b"\n" + line
    written = 0
    try:
        while written < len(line):
            count = os.write(fd, line[written:])
            if count <= 0:
                raise OSError(errno.ENOSPC, "short write")
            written += count
    except OSError:
        if written and os.fstat(fd).st_size == before + written:  # nobody appended after it
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
        raise
