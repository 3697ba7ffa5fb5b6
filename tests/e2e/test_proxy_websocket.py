"""End to end: a WebSocket client talks through `schoolgate run` (a real process) to a real TLS
WebSocket server on a catalogued host, all on 127.0.0.1. Binary messages that are media are
judged: a benign photo arrives byte-identical, a photo whose PDQ hash is in the test bank is
dropped (the upstream never sees it) and the connection keeps working. Benign images only: the
"banned" image is a scikit-image photo placed in a test bank."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    ProxyProcess,
    UpstreamPki,
    client_ssl_context,
)
from tests.support.stack import needs_private_hosts, proxy_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]

TIMEOUT_S = 20.0  # every socket wait is bounded by this
WS_PATH = "/ws/chat"


# ---------------------------------------------------------------------------------------------
# A recording WebSocket upstream over the harness's throwaway PKI


@dataclass
class WsRecord:
    """Every complete message the upstream WebSocket server received, in arrival order."""

    messages: list[bytes | str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[bytes | str]:
        with self.lock:
            return list(self.messages)


class _WsHandler(socketserver.BaseRequestHandler):
    """Server side of one connection: record each message and acknowledge it as text."""

    server: _WsServer

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT_S)
        try:
            with self.server.context.wrap_socket(self.request, server_side=True) as tls:
                self._serve(tls)
        except (OSError, ssl.SSLError):
            return  # the client or the proxy went away: nothing more to record

    def _serve(self, tls: ssl.SSLSocket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        parts: list[bytes | str] = []
        while True:
            data = tls.recv(65536)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, Request):
                    tls.sendall(ws.send(AcceptConnection()))
                elif isinstance(event, Message):
                    parts.append(event.data)
                    if not event.message_finished:
                        continue
                    whole: bytes | str = (
                        "".join(p for p in parts if isinstance(p, str))
                        if isinstance(event, TextMessage)
                        else b"".join(p for p in parts if isinstance(p, bytes))
                    )
                    parts.clear()
                    with self.server.record.lock:
                        self.server.record.messages.append(whole)
                    raw = whole.encode() if isinstance(whole, str) else whole
                    ack = f"ack {hashlib.sha256(raw).hexdigest()} {len(raw)}"
                    tls.sendall(ws.send(TextMessage(data=ack)))
                elif isinstance(event, Ping):
                    tls.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    tls.sendall(ws.send(event.response()))
                    return
            if not data:
                return


class _WsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext
    record: WsRecord


@dataclass
class WsUpstream:
    server: _WsServer
    thread: threading.Thread
    record: WsRecord

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_ws_upstream(pki: UpstreamPki) -> WsUpstream:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    server = _WsServer(("127.0.0.1", 0), _WsHandler)
    server.context = context
    server.record = WsRecord()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    return WsUpstream(server, thread, server.record)


# ---------------------------------------------------------------------------------------------
# A minimal wsproto client through the proxy's HTTP CONNECT


class WsClient:
    def __init__(self, tls: ssl.SSLSocket, ws: WSConnection) -> None:
        self.tls = tls
        self.ws = ws
        self.pending: list[Event] = []

    @classmethod
    def connect(
        cls, proxy_port: int, host: str, port: int, context: ssl.SSLContext, path: str
    ) -> WsClient:
        raw = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT_S)
        try:
            raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            reply = b""
            while b"\r\n\r\n" not in reply and len(reply) < 65536:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                reply += chunk
            if not reply.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(f"CONNECT refused: {reply[:200]!r}")
            tls = context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        client = cls(tls, WSConnection(ConnectionType.CLIENT))
        try:
            tls.sendall(client.ws.send(Request(host=f"{host}:{port}", target=path)))
            event = client.next_event()
            if isinstance(event, RejectConnection):
                raise ConnectionError(f"WebSocket upgrade rejected: {event.status_code}")
            assert isinstance(event, AcceptConnection), event
        except BaseException:
            tls.close()
            raise
        return client

    def next_event(self) -> Event:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.pending:
            if time.monotonic() > deadline:
                raise TimeoutError("no WebSocket event in time")
            data = self.tls.recv(65536)  # the socket timeout bounds each wait
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise ConnectionError("connection closed")
        return self.pending.pop(0)

    def next_text(self) -> str:
        text = ""
        while True:
            event = self.next_event()
            if isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return text
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"closed by peer: {event.code} {event.reason}")

    def send(self, data: bytes | str) -> None:
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self.tls.sendall(self.ws.send(event))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on teardown
            self.tls.sendall(self.ws.send(CloseConnection(code=1000)))
        self.tls.close()


def ack_for(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return f"ack {hashlib.sha256(raw).hexdigest()} {len(raw)}"


# ---------------------------------------------------------------------------------------------
# The stack


@dataclass
class WsStack:
    upstream: WsUpstream
    proxy: ProxyProcess
    upstream_ca: Path
    banned_photo: Image.Image

    def client(self) -> WsClient:
        context = client_ssl_context(self.proxy.ca_pem, self.upstream_ca)
        return WsClient.connect(self.proxy.port, MEDIA_HOST, self.upstream.port, context, WS_PATH)


@pytest.fixture(scope="module")
def ws_stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[WsStack]:
    banned_photo = benign_photos["chelsea"]
    work = tmp_path_factory.mktemp("proxy-ws")
    with proxy_stack(work, upstream=start_ws_upstream, banked=banned_photo) as running:
        yield WsStack(running.upstream, running.proxy, running.upstream_ca, banned_photo)


def test_websocket_media_is_judged_benign_passes_banked_dropped(
    ws_stack: WsStack, benign_photos: dict[str, Image.Image]
) -> None:
    benign = encode(benign_photos["astronaut"], "JPEG", quality=85)
    # A re-encoded copy: the PDQ bank entry still matches, the bytes are not in any bank.
    banned = encode(ws_stack.banned_photo, "JPEG", quality=70)
    after = "see you at lunch"
    client = ws_stack.client()
    try:
        client.send(benign)
        assert client.next_text() == ack_for(benign)
        client.send(banned)
        client.send(after)
        # The server acknowledges every message it gets, in order: the next ack is the text's.
        assert client.next_text() == ack_for(after)
    finally:
        client.close()

    received = ws_stack.upstream.record.snapshot()
    assert len(received) == 2, [len(m) for m in received]
    assert received[0] == benign  # byte-identical
    assert received[1] == after
    assert all(m != banned for m in received)

    by_sha = {r["hashes"].get("sha256"): r for r in ws_stack.proxy.audit_records()}
    allowed = by_sha[hashlib.sha256(benign).hexdigest()]
    assert allowed["decision"] == "allow"
    assert allowed["client"]["route"] == "websocket"
    blocked = by_sha[hashlib.sha256(banned).hexdigest()]
    assert blocked["decision"] == "block"
    assert blocked["matches"]
    assert blocked["matches"][0]["bank"] == "incident-test"
    assert blocked["client"]["app"] == "testshare"
    assert blocked["client"]["host"] == MEDIA_HOST
    assert blocked["client"]["route"] == "websocket"
    assert ws_stack.proxy.process.poll() is None


def test_media_inside_text_and_wrapped_binary_messages_is_judged(ws_stack: WsStack) -> None:
    """Only binary messages that started with a picture were judged: base64 in a JSON text
    message, or a picture after a protobuf-style header, went through (issue 16)."""
    banned = encode(ws_stack.banned_photo, "JPEG", quality=72)
    as_json = json.dumps({"op": 7, "d": {"attachment": base64.b64encode(banned).decode()}})
    wrapped = b"\x0a\x08chat-123\x12" + len(banned).to_bytes(4, "big") + banned
    chat = json.dumps({"op": 1, "d": {"content": "homework is on page 12"}})
    client = ws_stack.client()
    try:
        client.send(as_json)
        client.send(wrapped)
        client.send(chat)
        assert client.next_text() == ack_for(chat)  # the first two never reached the server
    finally:
        client.close()
    received = ws_stack.upstream.record.snapshot()
    assert as_json not in received
    assert wrapped not in received
    assert chat in received
