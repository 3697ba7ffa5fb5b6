"""When the first part of an unfinished upload is looked at for a banked picture or video
(`reassembly.UploadSessions.partial`): each look decodes the whole part, so the looks grow apart,
and a declared size, which the client chooses, only brings them nearer."""

from __future__ import annotations

from typing import Final

from schoolgate.endpoints.archive_starts import is_archive_start
from schoolgate.media.cutshort import shows_rows

_PARTIAL_MIN: Final = 16 * 1024  # a prefix of an upload of undeclared size worth looking at
_NEARLY_ALL: Final = (63, 64)  # a prefix this share of the declared size is looked at once more
# A still picture's first part is looked at from this share of its declared size, then at each
# step of growth: a progressive JPEG shows the whole picture from about a tenth, a baseline one
# or a PNG enough of its rows from a fifth to a half (measured on twelve photos, session 50).
_STILL_FIRST: Final = 8
_STILL_STEP: Final = 16


def look_due(prefix: bytes, total: int | None, looked: int) -> bool:
    """Whether the first part `prefix` of an upload of `total` bytes (None: not declared), last
    looked at when `looked` bytes long (0: never), is to be looked at now: when `next_look` says
    so, and once more when it is nearly all of the declared size."""
    if is_archive_start(prefix):
        # Its files so far, at every chunk: a file may start and end between two looks (a71
        # N1, N3). Only the files not yet whole at the last look are judged again.
        return len(prefix) > looked
    still = shows_rows(prefix)  # a first part shows its rows
    nearly_all = total is not None and len(prefix) * _NEARLY_ALL[1] >= total * _NEARLY_ALL[0]
    due = len(prefix) >= next_look(looked, total, still)
    return due or (nearly_all and len(prefix) > looked)


def worth_a_look(length: int, total: int | None, still: bool = False) -> bool:
    """Whether the first `length` bytes of an unfinished upload of `total` bytes (None: not
    declared) are worth a first look for a banked picture (`next_look`)."""
    return length >= next_look(0, total, still)


def next_look(looked: int, total: int | None, still: bool) -> int:
    """How long the first part of an unfinished upload of `total` bytes (None: not declared),
    last looked at when `looked` bytes long (0: never), must be to be looked at again.

    Each look decodes the whole prefix, so they grow apart: from _PARTIAL_MIN, each half as long
    again, whatever the declared size says (a70 F1: a size declared 8 or 100 times the file's
    put every look past its end; F6: so did bytes after the picture). A declared size brings
    looks nearer, never further: a JPEG's or PNG's from an eighth of it, then at every
    sixteenth; anything else's at each quarter's growth once it holds half (a video's index
    may sit in its last bytes). The looks of a whole upload then cost about three times its
    last one."""
    first = _PARTIAL_MIN
    if total is not None:
        first = min(first, -(-total // (_STILL_FIRST if still else 2)))
    if not looked:
        return first
    geometric = looked + looked // 2
    if total is None:
        return geometric
    if still:
        return min(geometric, looked + -(-total // _STILL_STEP))
    return looked + looked // 4 if looked * 2 >= total else geometric
