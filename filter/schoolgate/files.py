"""Files the appliance writes for itself: whole or not at all."""

from __future__ import annotations

import contextlib
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
    """Hold an advisory lock on `path` (created if missing) for the block, waiting up to `wait_s`
    for another holder. The kernel drops it when the holder exits, also when it is killed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
