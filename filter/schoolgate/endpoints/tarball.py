"""The files of a tar archive (`.tar`, and inside `.tar.gz`, `.tar.xz`, ...), which Windows and
macOS open with a double click: a picture in one starts 512 bytes in, where only formats with a
strong signature were found by carving (adversarial pass a42 F2: a BMP or a TIFF passed)."""

from __future__ import annotations

import io
import tarfile
from typing import Final

from schoolgate.endpoints.extract import ExtractionError

_MAX_TAR_MEMBERS: Final = 10_000


def tar_members(data: bytes) -> list[tuple[str, bytes]] | None:
    """(name, bytes) of each regular file; None when `data` is not a POSIX or GNU tar. A file
    cut short by the end of the data gives what it holds, as `tar` does."""
    files = tar_files(data)
    return None if files is None else [(name, content) for name, content, _ in files]


def tar_files(data: bytes) -> list[tuple[str, bytes, int]] | None:
    """As `tar_members`, with where in `data` each file's bytes start."""
    if len(data) < 512 or data[257:262] != b"ustar":
        return None
    found: list[tuple[str, bytes, int]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for number, member in enumerate(archive):
                if number >= _MAX_TAR_MEMBERS:
                    raise ExtractionError("too_many_parts", "a tar of too many files")
                # A sparse member's holes are made up, not sent: a bomb of zeros otherwise.
                if not member.isfile() or member.issparse():
                    continue
                start = member.offset_data
                # Sliced, not read through tarfile: a file cut short gives what it holds.
                found.append((member.name, data[start : start + member.size], start))
    except (tarfile.TarError, EOFError, OSError, ValueError):
        pass  # what was read before the damage is what a reader gets
    return found
