"""The question names of a DNS query message, read defensively from hostile bytes."""

from __future__ import annotations

from typing import Final

from schoolgate.sniffer.tlshello import Bytes, Malformed

MAX_QUESTIONS: Final = 4  # real resolvers send one; a few more is tolerated, not a flood
MAX_POINTERS: Final = 8


def query_names(message: Bytes) -> list[str] | None:
    """The names a DNS query asks about; None for a response. Raises Malformed."""
    if len(message) < 12:
        raise Malformed("shorter than a DNS header")
    flags = int.from_bytes(message[2:4], "big")
    if flags & 0x8000:
        return None  # a response: the sniffer records what devices ask, not what they are told
    if (flags >> 11) & 0x0F != 0:
        return []  # not a standard query (NOTIFY, UPDATE, ...)
    count = int.from_bytes(message[4:6], "big")
    if count == 0 or count > MAX_QUESTIONS:
        raise Malformed(f"{count} questions in a query")
    names: list[str] = []
    pos = 12
    for _ in range(count):
        name, pos = _name(message, pos)
        if pos + 4 > len(message):
            raise Malformed("question cut short")
        pos += 4  # type and class
        names.append(name)
    return names


def _name(message: Bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end: int | None = None
    pointers = 0
    length = 0
    while True:
        if pos >= len(message):
            raise Malformed("name runs past the message")
        size = message[pos]
        if size == 0:
            pos += 1
            break
        if size & 0xC0 == 0xC0:
            if pos + 1 >= len(message):
                raise Malformed("compression pointer cut short")
            pointers += 1
            if pointers > MAX_POINTERS:
                raise Malformed("compression pointer loop")
            if end is None:
                end = pos + 2
            pos = ((size & 0x3F) << 8) | message[pos + 1]
            continue
        if size & 0xC0:
            raise Malformed("reserved label type")
        label = bytes(message[pos + 1 : pos + 1 + size])
        if len(label) != size:
            raise Malformed("label runs past the message")
        length += size + 1
        if length > 255:
            raise Malformed("name longer than 255 bytes")
        try:
            labels.append(label.decode("ascii").lower())
        except UnicodeDecodeError:
            raise Malformed("label is not ASCII") from None
        pos += 1 + size
    if not labels:
        return ".", end if end is not None else pos
    return ".".join(labels), end if end is not None else pos
