"""A per-flow cap on the bodies mitmproxy buffers for held uploads and held downloads.

mitmproxy bounds buffered bodies only with its global `body_size_limit`, which would also cut
every large download and every upload we pass through. A held body needs its own cap, enforced
while the body arrives: chunked HTTP/1 and HTTP/2 bodies declare no length up front, so without
it one client (or one hostile upstream) could make the proxy buffer without bound. mitmproxy 12
has no hook while a body is buffered, so `install` wraps the two states of its HTTP stream that
buffer request and response bodies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import HttpStream, SendHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestData,
    RequestEndOfMessage,
    RequestProtocolError,
    ResponseData,
    ResponseEndOfMessage,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

META = "schoolgate_held_cap"
RESPONSE_META = "schoolgate_held_response_cap"
DRAIN_META = "schoolgate_drain_cap"
DRAIN_FACTOR = 4  # a refused HTTP/1 body up to this many times the cap is read to its end

type _Commands = Generator[commands.Command, Any, None]


@dataclass(frozen=True)
class HeldCap:
    """At most `limit` body bytes are buffered for this flow.

    Past it (or once an addon has answered the flow), `over` is called with the bytes seen so far;
    it either sets `flow.response` (refused: that answer is sent at once and the connection or
    HTTP/2 stream is closed, the rest of the body is never read) or sets `flow.request.stream`
    (what arrived and the rest is forwarded unbuffered).

    For a held response (`hold_response`), `over` either sets `flow.response.stream` on the
    upstream's response (what arrived and the rest is sent to the client unbuffered) or replaces
    `flow.response` with an answer (sent at once; the upstream connection or HTTP/2 stream is
    closed, the rest of the body is never read). Doing neither aborts the flow on both sides.
    """

    limit: int
    over: Callable[[http.HTTPFlow, int], None]
    # Called with each piece's size as it arrives; False when the proxy-wide budget for held
    # bytes (`heldbudget`) has no room for it: then `over` decides, as past the limit.
    grow: Callable[[http.HTTPFlow, int], bool] | None = None


def hold(flow: http.HTTPFlow, cap: HeldCap) -> None:
    """Buffer this flow's request body within `cap`."""
    flow.request.stream = False
    flow.metadata[META] = cap
    flow.metadata[DRAIN_META] = cap.limit


def hold_response(flow: http.HTTPFlow, cap: HeldCap) -> None:
    """Buffer this flow's response body within `cap` (call from the responseheaders hook)."""
    assert flow.response is not None
    flow.response.stream = False
    flow.metadata[RESPONSE_META] = cap


_original: Callable[[HttpStream, events.Event], _Commands] | None = None
_original_response: Callable[[HttpStream, events.Event], _Commands] | None = None


def install() -> None:
    """Wrap mitmproxy's body buffering states once per process (idempotent)."""
    global _original, _original_response
    if _original is None:
        _original = HttpStream.state_consume_request_body
        HttpStream.state_consume_request_body = _consume_within_cap  # type: ignore[method-assign]
    if _original_response is None:
        _original_response = HttpStream.state_consume_response_body
        HttpStream.state_consume_response_body = _consume_response_within_cap  # type: ignore[method-assign]


def _consume_within_cap(self: HttpStream, event: events.Event) -> _Commands:
    assert _original is not None
    flow = self.flow
    cap = flow.metadata.get(META)
    if isinstance(cap, HeldCap) and isinstance(event, RequestData):
        size = len(self.request_body_buf) + len(event.data)
        spent = size <= cap.limit and cap.grow is not None and not cap.grow(flow, len(event.data))
        if size > cap.limit or flow.response is not None or spent:
            del flow.metadata[META]
            if flow.response is None:
                cap.over(flow, size)
            if flow.response is None and flow.request.stream:
                yield from _forward(self, event)
            else:
                yield from _refuse(self, size)
            return
    yield from _original(self, event)


def _forward(stream: HttpStream, event: RequestData) -> _Commands:
    # As mitmproxy does for `stream_large_bodies`: start streaming and replay what was buffered.
    body = bytes(stream.request_body_buf) + event.data
    stream.request_body_buf.clear()  # type: ignore[no-untyped-call]
    yield from stream.start_request_stream()
    yield from stream.handle_event(RequestData(stream.stream_id, body))


def _refuse(stream: HttpStream, drained: int = 0) -> _Commands:
    flow = stream.flow
    stream.request_body_buf.clear()  # type: ignore[no-untyped-call]
    cap = flow.metadata.get(DRAIN_META)
    if flow.response is not None and isinstance(cap, int) and _drainable(stream, cap, drained):
        # Most HTTP/1 clients (Python's among them) send the whole body before they read: cut
        # off, they stall until their own timeout and never see why. A body up to DRAIN_FACTOR
        # times the cap is read and thrown away, then answered.
        stream.client_state = _Drain(stream, cap * DRAIN_FACTOR, drained)
        return
    # Answer now and stop reading: HTTP/1 closes the connection, HTTP/2 resets only this stream.
    stream.client_state = stream.state_errored
    message = "request body refused before it was complete"
    if flow.response is not None:
        flow.response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(flow)
        yield from stream.send_response()
        yield SendHttp(ResponseEndOfMessage(stream.stream_id), stream.context.client)
    yield SendHttp(
        ResponseProtocolError(stream.stream_id, message, ErrorCode.REQUEST_TOO_LARGE),
        stream.context.client,
    )
    flow.live = False


def _drainable(stream: HttpStream, cap: int, drained: int) -> bool:
    """HTTP/1 only (HTTP/2 and 3 reset just the stream, which clients read as an answer), and
    only a body that does not declare more than the drain limit."""
    request = stream.flow.request
    if not request.http_version.upper().startswith("HTTP/1"):
        return False
    declared = request.headers.get("content-length", "").strip()
    limit = cap * DRAIN_FACTOR
    return drained <= limit and (not declared.isdigit() or int(declared) <= limit)


class _Drain:
    """A client state that reads the rest of a refused HTTP/1 body without keeping it, then
    sends the answer; past `limit` bytes it refuses at once."""

    def __init__(self, stream: HttpStream, limit: int, drained: int) -> None:
        self.stream = stream
        self.limit = limit
        self.drained = drained

    def __call__(self, event: events.Event) -> _Commands:
        stream = self.stream
        if isinstance(event, RequestData):
            self.drained += len(event.data)
            if self.drained > self.limit:
                stream.flow.metadata.pop(DRAIN_META, None)
                yield from _refuse(stream)
        elif isinstance(event, RequestEndOfMessage):
            flow = stream.flow
            assert flow.response is not None
            stream.client_state = stream.state_done
            flow.request.timestamp_end = time.time()
            flow.response.timestamp_start = time.time()
            yield HttpResponseHeadersHook(flow)
            yield from stream.send_response()


def _consume_response_within_cap(self: HttpStream, event: events.Event) -> _Commands:
    assert _original_response is not None
    flow = self.flow
    cap = flow.metadata.get(RESPONSE_META)
    if isinstance(cap, HeldCap) and isinstance(event, ResponseData):
        size = len(self.response_body_buf) + len(event.data)
        if size > cap.limit:
            del flow.metadata[RESPONSE_META]
            upstream = flow.response
            cap.over(flow, size)
            if flow.response is not None and flow.response is upstream and upstream.stream:
                yield from _forward_response(self, event)
            else:
                yield from _refuse_response(self, answered=flow.response is not upstream)
            return
    yield from _original_response(self, event)


def _forward_response(stream: HttpStream, event: ResponseData) -> _Commands:
    # As mitmproxy does for `stream_large_bodies`: start streaming and replay what was buffered.
    body = bytes(stream.response_body_buf) + event.data
    stream.response_body_buf.clear()  # type: ignore[no-untyped-call]
    yield from stream.start_response_stream()
    yield from stream.handle_event(ResponseData(stream.stream_id, body))


def _refuse_response(stream: HttpStream, *, answered: bool) -> _Commands:
    # Stop reading the upstream (HTTP/1 closes its connection, HTTP/2 resets only this stream),
    # then send the answer in place of the response that was arriving, or abort like mitmproxy's
    # body_size_limit when there is none.
    flow = stream.flow
    stream.response_body_buf.clear()  # type: ignore[no-untyped-call]
    message = "response body refused before it was complete"
    yield SendHttp(
        RequestProtocolError(stream.stream_id, message, ErrorCode.RESPONSE_TOO_LARGE),
        stream.context.server,
    )
    stream.server_state = stream.state_errored
    if answered and flow.response is not None:
        flow.response.timestamp_start = time.time()
        yield from stream.send_response()
        stream.server_state = stream.state_errored
        return
    yield SendHttp(
        ResponseProtocolError(stream.stream_id, message, ErrorCode.RESPONSE_TOO_LARGE),
        stream.context.client,
    )
    stream.client_state = stream.state_errored
    flow.live = False
