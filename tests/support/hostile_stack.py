"""One proxy stack for the bypass, hostile-input and load suites: `schoolgate run` with a small
hold cap and extra upload routes (JSON, forms, auto, X chunked) in front of the recording HTTPS
upstream, plus raw clients (a TLS socket through CONNECT) for what httpx will not send."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
from PIL import Image

from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    TEST_CATALOG,
    ProxyProcess,
    Received,
    RunningUpstream,
    Upstream,
    UpstreamPki,
    client_ssl_context,
    multipart_body,
    start_upstream,
)
from tests.support.stack import start_proxy_stack

HOLD_CAP = 4 * 1024 * 1024  # small, so oversize cases cost little
RSS_CEILING = 400 * 1024 * 1024  # the proxy process (models off); about 150 MiB measured

EXTRA_ROUTES: list[dict[str, Any]] = [
    {"method": "POST", "path": "/upload/json", "body": "json_base64"},
    {"method": "POST", "path": "/upload/form", "body": "form_base64"},
    {"method": "POST", "path": "/upload/auto", "body": "auto"},
    {"method": "POST", "path": "/upload/x", "body": "auto", "protocol": "x_chunked"},
    {
        "method": "POST",
        "path": "/2/files/upload_session/*",
        "body": "raw",
        "protocol": "dropbox_session",
    },
]


def hostile_catalog() -> dict[str, Any]:
    catalog = copy.deepcopy(TEST_CATALOG)
    catalog["apps"]["testshare"]["upload_routes"].extend(EXTRA_ROUTES)
    return catalog


@dataclass
class HostileStack:
    upstream: RunningUpstream
    proxy: ProxyProcess
    upstream_ca: Path
    banned_photo: Image.Image  # its PDQ hash is in the test bank
    benign_photo: Image.Image  # not in any bank
    cap: int
    h2_upstream: H2Upstream  # the same host name on another port, speaking HTTP/2 only

    def client(self, *, http2: bool = False, timeout: float = 60) -> httpx.Client:
        context = client_ssl_context(self.proxy.ca_pem, self.upstream_ca)
        return httpx.Client(
            proxy=self.proxy.url, verify=context, timeout=timeout, http2=http2, http1=True
        )

    def url(self, path: str, host: str = MEDIA_HOST) -> str:
        return f"https://{host}:{self.upstream.upstream.port}{path}"

    def h2_url(self, path: str, host: str = MEDIA_HOST) -> str:
        return f"https://{host}:{self.h2_upstream.port}{path}"

    def arrived(self, path: str) -> list[str]:
        """SHA-256 of every body the upstream received on `path` (a prefix)."""
        return [r.sha256 for r in self.upstream.upstream.requests(path)]

    def decisions(self) -> list[dict[str, Any]]:
        return self.proxy.audit_records()

    def rss_bytes(self) -> int:
        """Resident memory of the `schoolgate run` process (unshare and sh exec into it)."""
        status = Path(f"/proc/{self.proxy.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def tls_socket(
        self, host: str = MEDIA_HOST, timeout: float = 30, source: str = "127.0.0.1"
    ) -> ssl.SSLSocket:
        """A TLS connection to `host` through the proxy (CONNECT), for hand-written requests."""
        port = self.upstream.upstream.port
        raw = socket.create_connection(
            ("127.0.0.1", self.proxy.port), timeout=timeout, source_address=(source, 0)
        )
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 65536:
            chunk = raw.recv(4096)
            if not chunk:
                break
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 200"):
            raw.close()
            raise ConnectionError(f"CONNECT refused: {reply[:200]!r}")
        context = client_ssl_context(self.proxy.ca_pem, self.upstream_ca)
        context.set_alpn_protocols(["http/1.1"])
        return context.wrap_socket(raw, server_hostname=host)

    def host_header(self, host: str = MEDIA_HOST) -> str:
        return f"{host}:{self.upstream.upstream.port}"

    def assert_serving(self) -> None:
        """A benign upload right now passes through the proxy untouched."""
        photo = encode(self.benign_photo, "JPEG", quality=80)
        name = f"/upload/raw/still-serving-{time.monotonic_ns()}.jpg"
        with self.client(timeout=30) as client:
            response = client.put(self.url(name), content=photo)
        assert response.status_code == 200, response.text
        assert self.arrived(name) == [hashlib.sha256(photo).hexdigest()]
        assert self.proxy.process.poll() is None


def raw_exchange(
    sock: ssl.SSLSocket, request: bytes, timeout: float = 15, responses: int = 1
) -> bytes:
    """Send `request`; read until `responses` whole responses came, the peer closed or went
    quiet for `timeout` seconds; return what came back."""
    sock.sendall(request)
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(received) < 1 << 20:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        received += chunk
        if _complete_responses(received) >= responses:
            break
    return received


def _walk_responses(data: bytes) -> tuple[list[int], bool]:
    """Status codes of the responses `data` holds one after another (1xx included), and
    whether the last one is complete (its Content-Length body has arrived)."""
    codes: list[int] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 ") or not head[9:12].isdigit():
            return codes, False
        codes.append(int(head[9:12]))
        if not sep:
            return codes, False
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or b"0")
        if len(rest) < length:
            return codes, False
        data = rest[length:]
    return codes, True


def _complete_responses(data: bytes) -> int:
    """How many whole final (non-1xx) responses `data` holds."""
    codes, complete = _walk_responses(data)
    finals = [code for code in codes if code >= 200]
    return len(finals) - (0 if complete or not codes or codes[-1] < 200 else 1)


def _complete(data: bytes) -> bool:
    return _complete_responses(data) >= 1


def statuses(data: bytes) -> list[int]:
    """Status codes of every HTTP/1.1 response in `data` (1xx included)."""
    return _walk_responses(data)[0]


@dataclass(frozen=True)
class StreamOutcome:
    sent: int  # body bytes the client got onto the wire before the proxy answered or closed
    reply: bytes  # what the proxy answered (empty when it only closed the connection)
    seconds: float
    finished: bool  # the client ran out of body to send (the proxy never stopped it)


def stream_body(
    sock: ssl.SSLSocket, head: bytes, pieces: Iterator[bytes], *, time_limit: float = 60
) -> StreamOutcome:
    """Send `head`, then body pieces until the proxy answers or closes, or `time_limit` passes.

    Between pieces the socket is polled for a reply, so the client stops as soon as the proxy
    has decided, as a real uploader watching the connection would.
    """
    start = time.monotonic()
    sock.settimeout(10)  # a proxy that stops reading without answering fails the test, not hangs
    sock.sendall(head)
    sent = 0
    reply = b""
    finished = True
    for piece in pieces:
        if time.monotonic() - start > time_limit:
            finished = False
            break
        answered, reply = _poll_reply(sock)
        if answered:
            finished = False
            break
        try:
            sock.sendall(piece)
        except (ConnectionError, ssl.SSLError, OSError):
            finished = False
            break
        sent += len(piece)
    sock.settimeout(10)
    try:
        while len(reply) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
        pass
    return StreamOutcome(sent, reply, time.monotonic() - start, finished)


def _poll_reply(sock: ssl.SSLSocket) -> tuple[bool, bytes]:
    """(whether the proxy answered or closed, what it sent) without blocking.

    A readable TLS socket may only hold a TLS 1.3 session ticket: only application data or a
    close counts as an answer."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable and not sock.pending():
        return False, b""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except ssl.SSLWantReadError:
        return False, b""
    except (ConnectionError, ssl.SSLError, OSError):
        return True, b""
    finally:
        sock.settimeout(10)
    return True, data


class H2Upstream:
    """A minimal HTTPS server speaking HTTP/2 only (ALPN h2), recording into an `Upstream`.

    mitmproxy offers a client HTTP/2 only when the upstream speaks it, as real sharing services
    do; the recording server in proxy_harness is HTTP/1.1 only."""

    def __init__(self, pki: UpstreamPki, upstream: Upstream) -> None:
        self.upstream = upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.cert_pem, pki.key_pem)
        self.context.set_alpn_protocols(["h2"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as sock:
                sock.settimeout(30)
                self._h2(sock)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return

    def _h2(self, sock: ssl.SSLSocket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        heads: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytearray] = {}
        for _ in range(100_000):  # bounded: a test connection carries few frames
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    heads[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
                    bodies[event.stream_id] = bytearray()
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self._reply(
                        conn, event.stream_id, heads[event.stream_id], bodies.pop(event.stream_id)
                    )
            sock.sendall(conn.data_to_send())

    def _reply(self, conn: Any, stream_id: int, head: dict[str, str], body: bytearray) -> None:
        record = Received(
            head.get(":method", ""),
            head.get(":authority", ""),
            head.get(":path", ""),
            hashlib.sha256(body).hexdigest(),
            len(body),
        )
        with self.upstream.lock:
            self.upstream.received.append(record)
        reply = json.dumps({"ok": True, "sha256": record.sha256}).encode()
        conn.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", str(len(reply))),
            ],
        )
        conn.send_data(stream_id, reply, end_stream=True)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=5)


def build_stack(
    work: Path,
    banned: Image.Image,
    benign: Image.Image,
    *,
    workers: int = 2,
    proxy_extra: dict[str, Any] | None = None,
    groups: list[dict[str, Any]] | None = None,
) -> HostileStack:
    stack = start_proxy_stack(
        work,
        upstream=start_upstream,
        banked=banned,
        proxy={"max_held_body_bytes": HOLD_CAP, "workers": workers, **(proxy_extra or {})},
        catalog_data=hostile_catalog(),
        groups=groups,
    )
    try:
        h2_upstream = H2Upstream(stack.pki, stack.upstream.upstream)
    except BaseException:
        stack.stop()
        raise
    return HostileStack(
        stack.upstream, stack.proxy, stack.upstream_ca, banned, benign, HOLD_CAP, h2_upstream
    )


def stop_stack(stack: HostileStack) -> None:
    stack.proxy.stop()
    stack.upstream.stop()
    stack.h2_upstream.stop()


def multipart(data: bytes, filename: str = "photo.jpg", ctype: str = "image/jpeg") -> Any:
    """(body, content type) of a one-file multipart form."""
    return multipart_body("file", filename, data, ctype)


def zero_pieces(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    """`total` bytes of body in pieces, generated lazily (never allocated whole)."""
    block = b"\0" * piece
    left = total
    while left > 0:
        yield block[: min(piece, left)]
        left -= piece


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked transfer coding of `pieces` (without the final zero chunk)."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


def proxy_pid_exists(stack: HostileStack) -> bool:
    return stack.proxy.process.poll() is None and os.path.exists(f"/proc/{stack.proxy.process.pid}")


# ---------------------------------------------------------------------------------------------
# Load: N clients x M uploads, a mix of pass-through, inspected-benign and banked uploads

KINDS = ("passthrough", "benign", "banked")


@dataclass
class LoadReport:
    latencies: dict[str, list[float]]  # seconds per request, by kind
    wrong: list[str]  # every wrong decision, described
    errors: list[str]  # client-side failures (connection errors, timeouts)
    peak_rss: int
    seconds: float

    def percentile(self, kind: str, q: float) -> float:
        ordered = sorted(self.latencies[kind])
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class RssSampler:
    """Samples a process's resident memory from /proc every `interval` seconds."""

    def __init__(self, stack: HostileStack, interval: float = 0.05) -> None:
        self.stack = stack
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.stack.rss_bytes())
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_load(
    stack: HostileStack, clients: int, uploads: int, *, time_limit: float = 240
) -> LoadReport:
    """`clients` threads, each with its own connection, sending `uploads` requests that cycle
    through KINDS; every answer is checked against what it should have been."""
    from tests.support.proxy_harness import OTHER_HOST

    benign = encode(stack.benign_photo, "JPEG", quality=85)
    banked = encode(stack.banned_photo, "JPEG", quality=85)
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    wrong: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def client_loop(number: int) -> None:
        with stack.client(timeout=60) as client:
            for index in range(uploads):
                if time.monotonic() > deadline:
                    with lock:
                        errors.append(f"client {number}: time limit reached at upload {index}")
                    return
                kind = KINDS[(number + index) % len(KINDS)]
                tag = f"load-{number}-{index}"
                if kind == "passthrough":
                    url, body, expect = stack.url(f"/load/{tag}", OTHER_HOST), benign, 200
                elif kind == "benign":
                    url, body, expect = stack.url(f"/upload/raw/{tag}.jpg"), benign, 200
                else:
                    url, body, expect = stack.url(f"/upload/raw/{tag}.jpg"), banked, 403
                started = time.perf_counter()
                try:
                    response = client.put(url, content=body)
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(f"{tag} ({kind}): {type(error).__name__}: {error}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies[kind].append(elapsed)
                    if response.status_code != expect:
                        wrong.append(f"{tag} ({kind}): {response.status_code}, expected {expect}")

    started = time.monotonic()
    with RssSampler(stack) as sampler:
        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=time_limit + 60)
    seconds = time.monotonic() - started
    # What arrived upstream must be exactly the allowed uploads, and no banked one.
    banked_sha = hashlib.sha256(banked).hexdigest()
    for received in stack.upstream.upstream.requests("/upload/raw/load-"):
        if received.sha256 == banked_sha:
            wrong.append(f"banked upload reached the upstream at {received.path}")
    return LoadReport(latencies, wrong, errors, sampler.peak, seconds)
