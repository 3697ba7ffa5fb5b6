"""Real TLS ClientHellos, captured from Python's ssl through a memory BIO (nothing is sent)."""

from __future__ import annotations

import contextlib
import ssl

from mitmproxy import tls
from mitmproxy.proxy.layers.tls import parse_client_hello


def plain_context() -> ssl.SSLContext:
    """A client context that does not check the name (the hello is all we want of it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    return context


def client_hello(
    context: ssl.SSLContext | None = None, server_name: str | None = "media.example"
) -> tls.ClientHello:
    """The ClientHello `context` sends to `server_name` (None: no SNI)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = (context or plain_context()).wrap_bio(
        incoming, outgoing, server_hostname=server_name
    )
    with contextlib.suppress(ssl.SSLWantReadError):  # the server's answer never comes
        connection.do_handshake()
    hello = parse_client_hello(outgoing.read())
    assert hello is not None
    return hello
