"""A bounded parser for the TLS ClientHello: server name (SNI), ALPN and whether ECH is offered.

It reads hostile bytes: every length is checked against what is there, nothing is allocated beyond
the input, and anything that does not fit the grammar raises `Malformed`. A ClientHello cut short
(split across TCP segments or QUIC packets) raises `Incomplete`, unless the server name was already
read before the cut, which is all the sniffer needs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

HANDSHAKE_RECORD: Final = 0x16
CLIENT_HELLO: Final = 0x01
EXT_SERVER_NAME: Final = 0x0000
EXT_ALPN: Final = 0x0010
EXT_ECH: Final = 0xFE0D
EXT_SESSION_TICKET: Final = 0x0023
# A ClientHello is a few KiB at most (post-quantum key shares included); anything claiming more is
# not one worth buffering.
MAX_CLIENT_HELLO: Final = 64 * 1024


type Bytes = bytes | bytearray | memoryview


class Malformed(ValueError):
    """The bytes are not a well-formed ClientHello."""


class Incomplete(ValueError):
    """The bytes are the start of a ClientHello; more are needed to reach the server name."""


@dataclass(frozen=True)
class ClientHello:
    sni: str | None
    alpn: tuple[str, ...] = ()
    ech: bool = False  # an Encrypted Client Hello is offered: `sni` is then only the outer name
    # What a TLS <= 1.2 client offers to resume (sniffer.tlsresume): its session id, and the
    # ticket in its session_ticket extension (empty: tickets wanted, none held).
    session_id: bytes = b""
    ticket: bytes = b""


class _Reader:
    """Reads big-endian fields from a buffer; running out raises Incomplete."""

    def __init__(self, data: Bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        self.truncated = end is not None and end > len(data)

    def take(self, size: int) -> bytes:
        if self.pos + size > self.end:
            raise Incomplete(f"needs {self.pos + size - self.end} more bytes")
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.uint(length_size))

    @property
    def left(self) -> int:
        return self.end - self.pos


def parse_handshake(data: Bytes) -> ClientHello:
    """Parse handshake-layer bytes (what QUIC CRYPTO frames carry) that start a ClientHello."""
    if len(data) < 4:
        raise Incomplete("shorter than a handshake header")
    if data[0] != CLIENT_HELLO:
        raise Malformed(f"handshake type {data[0]} is not a ClientHello")
    length = int.from_bytes(data[1:4], "big")
    if length < 38 or length > MAX_CLIENT_HELLO:
        raise Malformed(f"implausible ClientHello length {length}")
    return _client_hello(_Reader(data, 4, 4 + length))


def _client_hello(body: _Reader) -> ClientHello:
    version = body.uint(2)
    if version >> 8 != 3:
        raise Malformed(f"legacy version {version:#06x} is not TLS")
    body.take(32)  # random
    session_id = body.vector(1)
    if len(session_id) > 32:
        raise Malformed("session id longer than 32 bytes")
    suites = body.vector(2)
    if not suites or len(suites) % 2:
        raise Malformed("empty or odd cipher suite list")
    if not body.vector(1):
        raise Malformed("no compression methods")
    if body.left == 0 and not body.truncated:
        return ClientHello(None, session_id=session_id)  # no extensions (TLS 1.0 style)
    ext_end = body.pos + 2 + body.uint(2)
    if not body.truncated and ext_end != body.end:
        raise Malformed("extensions do not fill the ClientHello")
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    ech = False
    ticket = b""
    seen: set[int] = set()
    # The extensions are read in place, not through the reader: every connection the fast path
    # checks waits for this loop (a browser's hello carries some 16 extensions).
    data, pos, end = body.data, body.pos, body.end
    try:
        while pos < ext_end:
            if pos + 4 > end:
                raise Incomplete(f"needs {pos + 4 - end} more bytes")
            ext_type, length = _EXTENSION.unpack_from(data, pos)
            pos += 4
            if pos + length > end:
                raise Incomplete(f"needs {pos + length - end} more bytes")
            if ext_type in seen:
                raise Malformed(f"extension {ext_type:#06x} repeated")
            seen.add(ext_type)
            if ext_type == EXT_SERVER_NAME:
                sni = _server_name(bytes(data[pos : pos + length]))
            elif ext_type == EXT_ALPN:
                alpn = _alpn(bytes(data[pos : pos + length]))
            elif ext_type == EXT_ECH:
                ech = True
            elif ext_type == EXT_SESSION_TICKET:
                ticket = bytes(data[pos : pos + length])
            pos += length
    except Incomplete:
        if sni is None:
            raise
    return ClientHello(sni, alpn, ech, session_id, ticket)


_EXTENSION: Final = struct.Struct("!HH")  # type, length
_HOST_NAME: Final = re.compile(rb"[A-Za-z0-9._-]+")


def _server_name(ext: bytes) -> str | None:
    reader = _Reader(ext)
    found: str | None = None
    try:
        names = _Reader(reader.vector(2))
        if reader.left:
            raise Malformed("bytes after the server name list")
        while names.left:
            kind = names.uint(1)
            value = names.vector(2)
            if kind == 0:
                if found is not None:
                    # RFC 6066 allows one name of a type; a filter reading the first and a
                    # server the second would disagree on the server (adversarial pass a17).
                    raise Malformed("more than one server name")
                found = _hostname(value)
    except Incomplete as error:
        raise Malformed(f"server name extension overruns itself: {error}") from None
    return found


def _hostname(value: bytes) -> str:
    if not value or len(value) > 253:
        raise Malformed("server name empty or longer than a DNS name")
    if _HOST_NAME.fullmatch(value) is None:
        if not value.isascii():
            raise Malformed("server name is not ASCII")
        raise Malformed("server name has characters no host name has")
    return value.decode("ascii").lower().rstrip(".")


def _alpn(ext: bytes) -> tuple[str, ...]:
    reader = _Reader(ext)
    protocols: list[str] = []
    try:
        items = _Reader(reader.vector(2))
        while items.left:
            protocols.append(items.vector(1).decode("ascii", "replace"))
    except Incomplete as error:
        raise Malformed(f"ALPN extension overruns itself: {error}") from None
    return tuple(protocols)


def handshake_from_records(stream: Bytes) -> bytes:
    """Concatenate the handshake fragments of the TLS records at the start of a TCP stream.

    Raises Malformed if the stream does not start with handshake records; returns what is there
    (possibly a partial ClientHello) when records are cut short.
    """
    return _records(stream)[0]


def _records(stream: Bytes) -> tuple[bytes, int]:
    """The handshake bytes of the records at the start of the stream, and where they end."""
    out = bytearray()
    pos = 0
    while pos + 5 <= len(stream) and len(out) < MAX_CLIENT_HELLO + 4:
        if stream[pos] != HANDSHAKE_RECORD or stream[pos + 1] != 3:
            if pos == 0:
                raise Malformed("not a TLS handshake record")
            # The hello is not whole (the loop ends once it is): a record of another kind
            # inside it is ignored by some servers (OpenSSL skips a ChangeCipherSpec there), so
            # waiting for more of the hello would let one read the whole of it first
            # (adversarial pass a34: a second hello split around a ChangeCipherSpec).
            raise Malformed(f"a record of type {stream[pos]} inside the ClientHello")
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise Malformed(f"TLS record length {length} out of range")
        out += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(out) >= 4 and len(out) >= 4 + int.from_bytes(out[1:4], "big"):
            break
    if pos == 0 and len(stream) >= 1 and stream[0] != HANDSHAKE_RECORD:
        raise Malformed("not a TLS handshake record")
    return bytes(out), min(pos, len(stream))


def looks_like_client_hello(payload: Bytes) -> bool:
    """The first bytes of a TCP payload that starts a TLS ClientHello record."""
    return (
        len(payload) >= 6
        and payload[0] == HANDSHAKE_RECORD
        and payload[1] == 3
        and payload[5] == CLIENT_HELLO
    )


def parse_tls_stream(stream: Bytes) -> ClientHello:
    """Parse the start of a client's TCP stream: TLS records carrying a ClientHello."""
    return parse_handshake(handshake_from_records(stream))


def complete_client_hello(stream: Bytes) -> tuple[ClientHello, int] | None:
    """The whole ClientHello at the start of a client's TCP stream, with the number of stream
    bytes its records take, or None while more bytes are needed. Unlike `parse_tls_stream` it
    never answers from a cut-short hello: an extension after the server name (ECH among them)
    must be seen before the hello is judged."""
    handshake, end = _records(stream)
    if len(handshake) < 4:
        return None
    if handshake[0] != CLIENT_HELLO:
        raise Malformed(f"handshake type {handshake[0]} is not a ClientHello")
    length = int.from_bytes(handshake[1:4], "big")
    if len(handshake) < 4 + length:
        if length > MAX_CLIENT_HELLO:
            raise Malformed(f"implausible ClientHello length {length}")
        return None
    if len(handshake) > 4 + length:
        # Another handshake message in the hello's last record (no client sends one: its next
        # waits for the server's answer). A server may read it as the hello a retry request
        # asks for, where the hello's own record was taken as read (a34's follow-up).
        raise Malformed("more handshake bytes after the ClientHello in its record")
    return parse_handshake(handshake[: 4 + length]), end
