"""A TLS <= 1.2 client can start a second handshake inside the encrypted stream (renegotiation),
with a ClientHello that names another server, and a server that allows client-initiated
renegotiation takes that name: a connection judged by its first hello and then passed on unread
reached a catalogued host (adversarial passes a27 and a36: 2 of 2 banked uploads).

The second hello is encrypted, but not the record that carries it: in TLS <= 1.2 a record's
content type is in its clear header, and after the client's ChangeCipherSpec the only handshake
record an ordinary client sends is its Finished. A later one is a renegotiation (one the client
starts, or its answer to a server's HelloRequest), which this gateway cannot read, so it is
refused. TLS 1.3 has no renegotiation and hides every record's type after the hello (its
ChangeCipherSpec, sent for middleboxes, is followed by at most a second hello in clear after a
HelloRetryRequest); such a stream never shows a second handshake record there.

`RenegotiationWatch` walks the client's record headers from the end of its first hello, keeping
only the header it is in: a few bytes, whatever the stream's length."""

from __future__ import annotations

from typing import Final

CHANGE_CIPHER_SPEC: Final = 0x14
HANDSHAKE: Final = 0x16
_HEADER: Final = 5  # content type, version (2), length (2)


class RenegotiationWatch:
    """Feed it the client's stream after its first hello, in order; `feed` answers the reason
    to refuse the connection, or "" while it is an ordinary one."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._body_left = 0  # bytes of the current record's body not yet seen
        self._changed_cipher = False
        self._finished = False  # the first handshake record after the ChangeCipherSpec
        self.refusal = ""

    def feed(self, data: bytes) -> str:
        at = 0
        while at < len(data) and not self.refusal:
            if self._body_left:
                step = min(self._body_left, len(data) - at)
                self._body_left -= step
                at += step
                continue
            take = min(_HEADER - len(self._header), len(data) - at)
            self._header += data[at : at + take]
            at += take
            if len(self._header) == _HEADER:
                self._record(self._header[0])
                self._body_left = int.from_bytes(self._header[3:5])
                self._header.clear()
        return self.refusal

    def _record(self, content_type: int) -> None:
        if content_type == CHANGE_CIPHER_SPEC:
            self._changed_cipher = True
        elif content_type == HANDSHAKE and self._changed_cipher:
            if self._finished:
                self.refusal = (
                    "the client started a second TLS handshake inside the connection "
                    "(renegotiation), whose server name the gateway cannot read"
                )
            self._finished = True
