"""A TLS 1.3 server that answers a ClientHello with a HelloRetryRequest gets a second
ClientHello, and a server that does not compare the two (OpenSSL 3.0 does not) takes the second
one's name. A connection judged by its first hello and then passed on unread could so name a
harmless server first and a catalogued one second (adversarial pass a25 H1: 6 of 6 banked
uploads through the fast path, 2 of 2 through the proxy's pass-through).

`RetryWatch` follows such a connection past its first hello, both ways, until the server's
first message: a ServerHello ends the watch; a HelloRetryRequest makes it read the client's
second ClientHello, which must name the same server. Given a `ResumeCheck`, it reads on where
that needs (a TLS <= 1.2 session resumed under another name: sniffer.tlsresume). It parses;
the proxy's pass-through layer and the fast path's check feed it the bytes (in stream order)
and act on its verdict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from schoolgate.sniffer.tlshello import ClientHello, Malformed, complete_client_hello
from schoolgate.sniffer.tlsresume import Resume, ResumeCheck

# RFC 8446 4.1.3: a HelloRetryRequest is a ServerHello with this random.
HRR_RANDOM: Final = bytes.fromhex(
    "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C"
)
HANDSHAKE: Final = 0x16
CHANGE_CIPHER_SPEC: Final = 0x14
SERVER_HELLO: Final = 0x02
_RANDOM_END: Final = 5 + 4 + 2 + 32  # record header, handshake header, version, random
MAX_WATCHED: Final = 32 * 1024  # client bytes after the first hello: a second hello fits


class Watch(enum.Enum):
    WAIT = "wait"  # the server's first message, or the second hello, is not whole yet
    DONE = "done"  # no retry, or a retry that names the same server: nothing more to read
    REFUSE = "refuse"  # the second hello names another server, or cannot be read


@dataclass(frozen=True)
class Verdict:
    watch: Watch
    reason: str = ""
    second: ClientHello | None = None
    second_end: int = 0  # client bytes after the first hello that the second one takes
    # WAIT, and the client's bytes must wait too: the server's TLS <= 1.2 hello is read, not
    # yet whether it resumes a session (a client resuming one may send its upload next).
    hold_client: bool = False
    # REFUSE of a resumed session: the client is answered with a fatal alert, which makes it
    # drop that session (sniffer.tlsresume), before the connection is closed.
    alert: bool = False
    # WAIT, and the server's bytes must wait too: whether its answer resumes a session is not
    # decided, and a refusal's alert must reach the client at a record's start.
    hold_server: bool = False


def normalized(name: str | None) -> str:
    return (name or "").strip().rstrip(".").lower()


class RetryWatch:
    """Feed it the server's stream from its first byte, and the client's from the end of its
    first hello, each in order; ask `verdict()` after each."""

    def __init__(self, first_sni: str | None, resume: ResumeCheck | None = None) -> None:
        self.first = normalized(first_sni)
        self.resume = resume
        self._server = bytearray()
        self._client = bytearray()
        self._overflow = False

    def server(self, data: bytes) -> None:
        if self.resume is not None:
            self.resume.feed(data)
        if len(self._server) < _RANDOM_END:
            self._server += data[: _RANDOM_END - len(self._server)]

    def client(self, data: bytes) -> None:
        room = MAX_WATCHED - len(self._client)
        self._overflow |= len(data) > room
        self._client += data[: max(room, 0)]

    def retried(self) -> bool | None:
        """Whether the server asked for a second hello; None while its first bytes are few."""
        if self._server[:1] and (self._server[0] != HANDSHAKE or (len(self._server) > 5
                                 and self._server[5] != SERVER_HELLO)):  # fmt: skip
            return False  # an alert, or not TLS: the handshake goes no further
        if len(self._server) < _RANDOM_END:
            return None
        return bytes(self._server[11:_RANDOM_END]) == HRR_RANDOM

    def verdict(self) -> Verdict:
        retried = self.retried()
        if retried is None:
            return Verdict(Watch.WAIT, hold_server=self.resume is not None)
        if not retried:
            return self._resumed()
        start = _after_change_cipher_spec(bytes(self._client))
        if start is None:
            return Verdict(Watch.WAIT if not self._overflow else Watch.REFUSE,
                           "no second ClientHello" if self._overflow else "")  # fmt: skip
        try:
            whole = complete_client_hello(bytes(self._client[start:]))
        except Malformed as exc:
            return Verdict(Watch.REFUSE, f"the second ClientHello cannot be read ({exc})")
        if whole is None:
            if self._overflow:
                return Verdict(Watch.REFUSE, "no whole second ClientHello")
            return Verdict(Watch.WAIT)
        hello, end = whole
        if normalized(hello.sni) != self.first:
            return Verdict(
                Watch.REFUSE,
                f"the retried ClientHello names {hello.sni or 'no server'}, not {self.first}",
                hello,
            )
        return Verdict(Watch.DONE, "", hello, start + end)

    def _resumed(self) -> Verdict:
        if self.resume is None:
            return Verdict(Watch.DONE)
        resume = self.resume.verdict()
        if resume is Resume.REFUSE:
            return Verdict(Watch.REFUSE, self.resume.reason, alert=True)
        if resume is Resume.DONE or (self._overflow and self.resume.awaiting_ticket):
            # Past MAX_WATCHED client bytes a promised ticket goes unread: a resumption of it
            # is refused once, and the client makes a new session.
            return Verdict(Watch.DONE)
        return Verdict(Watch.WAIT, hold_client=resume is Resume.HOLD,
                       hold_server=not self.resume.awaiting_ticket)  # fmt: skip


def _after_change_cipher_spec(stream: bytes) -> int | None:
    """Where the second hello starts: past the one-byte ChangeCipherSpec records a client may
    send first (RFC 8446 D.4, middlebox compatibility); None while those are not whole."""
    at = 0
    while len(stream) >= at + 1 and stream[at] == CHANGE_CIPHER_SPEC:
        if len(stream) < at + 5:
            return None
        at += 5 + int.from_bytes(stream[at + 3 : at + 5], "big")
    return at if len(stream) > at else None
