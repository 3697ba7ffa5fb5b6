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

The second hello is judged only once it is whole, so the server must never have a whole one
that the watch does not (adversarial pass a34: a second hello split around a ChangeCipherSpec,
which OpenSSL skips, was never whole to the watch and the banked upload after it went through).
Two things make sure: a hello interrupted by another record is refused (sniffer.tlshello), and a
server that says anything past its retry request and ChangeCipherSpec before the second hello
is judged has answered a hello the watch did not read, and is refused before the client hears.
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
# A retry request is a ServerHello with a cookie at most: past this the server is not waiting.
MAX_RETRY_REQUEST: Final = 16 * 1024


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
    # WAIT for the rest of a second hello: the client's bytes are read, and a relay that can
    # keep them from the server until the hello is judged does (the proxy's; the fast path
    # passes them on, and refuses the server's answer to a hello it did not read whole).
    unjudged: bool = False
    # REFUSE of a second handshake inside the encrypted stream (sniffer.tlsrenegotiation).
    renegotiated: bool = False


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
        room = _RANDOM_END - len(self._server)
        if room > 0:
            self._server += data[:room]
            data = data[room:]
        # Past the random only after a retry request: what the server says while it waits.
        if data and len(self._server) <= MAX_RETRY_REQUEST and self.retried():
            self._server += data[: MAX_RETRY_REQUEST + 1 - len(self._server)]

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
        try:
            whole = None if start is None else complete_client_hello(self._client[start:])
        except Malformed as exc:
            return Verdict(Watch.REFUSE, f"the second ClientHello cannot be read ({exc})")
        if whole is None or start is None:
            if self._overflow:
                return Verdict(Watch.REFUSE, "no whole second ClientHello")
            if _went_on(bytes(self._server)):
                return Verdict(Watch.REFUSE, "the server answered a second ClientHello that "
                               "was not read whole")  # fmt: skip
            return Verdict(Watch.WAIT, unjudged=True)
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


def _went_on(stream: bytes) -> bool:
    """Whether a server said more than its HelloRetryRequest and the ChangeCipherSpec records
    that may follow it (RFC 8446 D.4): until the second hello it has nothing more to say."""
    handshake = bytearray()
    at = 0
    while len(stream) > at:
        if len(stream) > MAX_RETRY_REQUEST or stream[at] not in (HANDSHAKE, CHANGE_CIPHER_SPEC):
            return True
        if stream[at] == HANDSHAKE:
            if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                return True  # a handshake record past the retry request
            length = int.from_bytes(stream[at + 3 : at + 5], "big") if len(stream) >= at + 5 else 0
            handshake += stream[at + 5 : at + 5 + length]
        if len(stream) < at + 5:
            return False
        at += 5 + int.from_bytes(stream[at + 3 : at + 5], "big")
    return len(handshake) >= 4 and len(handshake) > 4 + int.from_bytes(handshake[1:4], "big")
