"""HTTP/1 trailers become a clean protocol error instead of a stalled connection.

mitmproxy 12 does not implement HTTP/1 trailers: a chunked body that ends with trailer fields
makes its connection layer raise NotImplementedError, and the client waits, unanswered, until it
gives up (the upstream never sees the request, so nothing is let through, but the pupil's
connection hangs). `install` wraps the layer's body reader so that such a body is answered the
way mitmproxy answers any other framing error: 400 to a client that sent trailers, 502 when an
upstream reply carried them, and the connection closed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._http1 import Http1Connection

type _Commands = Generator[commands.Command, Any, None]

_original: Callable[[Http1Connection, events.Event], _Commands] | None = None


def install() -> None:
    """Wrap mitmproxy's HTTP/1 body reader once per process (idempotent)."""
    global _original
    if _original is None:
        _original = Http1Connection.read_body
        Http1Connection.read_body = _read_body_refusing_trailers  # type: ignore[method-assign]


def _read_body_refusing_trailers(self: Http1Connection, event: events.Event) -> _Commands:
    assert _original is not None
    try:
        yield from _original(self, event)
    except NotImplementedError as error:
        if "trailers" not in str(error).lower():
            raise
        assert self.stream_id is not None
        # The error first, so the 400 (or 502) goes out before the connection is closed.
        yield ReceiveHttp(
            self.ReceiveProtocolError(
                self.stream_id,
                "HTTP/1 protocol error: trailer fields are not supported",
                code=self.ReceiveProtocolError.code,
            )
        )
        yield commands.CloseConnection(self.conn)
