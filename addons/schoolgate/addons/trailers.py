"""HTTP/1 trailer fields dropped where a message ends, as RFC 9110 (6.5.1) lets an intermediary.

mitmproxy 12 does not implement HTTP/1 trailers: a chunked body that ends with trailer fields
(`0\\r\\nX-Checksum: abc\\r\\n\\r\\n`, valid framing) makes its connection layer raise
NotImplementedError. Turned into a protocol error, that still closed a pupil's upload with no
answer, no decision and no record at the gateway (adversarial pass a80 I1: innocent chunked
uploads ending in a trailer field, 4 of 4). `install` makes the layer read chunked bodies with a
reader that drops the trailer section: the message is judged and forwarded as any other, its
body the same, only the trailer fields (a checksum, a signature) not passed on. HTTP/2 trailers
are untouched: mitmproxy carries those.
"""

from __future__ import annotations

from typing import Any

import h11
from h11._readers import ChunkedReader  # the reader mitmproxy's HTTP/1 layer uses
from mitmproxy.proxy.layers.http import _http1


class _TrailersDropped(ChunkedReader):
    """A chunked body reader whose end of message carries no trailer fields."""

    def __call__(self, buf: Any) -> h11.Data | h11.EndOfMessage | None:
        event = super().__call__(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            return h11.EndOfMessage()
        return event


def install() -> None:
    """Make mitmproxy's HTTP/1 layer read chunked bodies with `_TrailersDropped` (idempotent)."""
    original = _http1.make_body_reader
    if getattr(original, "drops_trailers", False):
        return

    def make_body_reader(expected_size: int | None) -> _http1.TBodyReader:
        return _TrailersDropped() if expected_size is None else original(expected_size)

    make_body_reader.drops_trailers = True  # type: ignore[attr-defined]
    _http1.make_body_reader = make_body_reader
