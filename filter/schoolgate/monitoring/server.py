"""Serves the Prometheus exposition on its own thread: HTTP or HTTPS, optionally with basic auth.

The metrics port is separate from the proxy's and loopback by default; a site that scrapes from
another machine should turn on TLS and basic auth (see `metrics:` in config/schoolgate.yaml).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from schoolgate.errors import SchoolgateError
from schoolgate.monitoring.metrics import REGISTRY
from schoolgate.monitoring.settings import MetricsConfig

log = logging.getLogger("schoolgate.metrics")

REALM = "schoolgate metrics"
# A scraper that stalls mid-request (or mid-handshake) frees its thread after this long.
CLIENT_TIMEOUT_S = 10.0


class MetricsServerError(SchoolgateError):
    """The metrics endpoint could not start: unreadable password or certificate, port in use."""


class BasicAuth:
    """Checks `Authorization: Basic` headers against one username and password.

    Both sides are hashed before a constant-time compare, so neither the content nor the length
    of the secret leaks through timing.
    """

    def __init__(self, username: str, password: str) -> None:
        self._expected = hashlib.sha256(f"{username}:{password}".encode()).digest()

    @classmethod
    def from_file(cls, username: str, password_file: Path) -> BasicAuth:
        try:
            password = password_file.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise MetricsServerError(
                f"metrics.basic_auth.password_file {password_file}: cannot be read: {exc}"
            ) from None
        if not password:
            raise MetricsServerError(f"metrics.basic_auth.password_file {password_file} is empty")
        return cls(username, password)

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            supplied = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(supplied).digest(), self._expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        auth: BasicAuth | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.auth = auth
        self.tls = tls
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (getfqdn): not needed, and slow
        # on a gateway whose resolver is busy.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.settimeout(CLIENT_TIMEOUT_S)
        if self.tls is not None:
            # The handshake runs in the request's thread, so a slow client cannot stall accept.
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                log.debug("metrics TLS handshake from %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT_S
    server_version = "schoolgate-metrics"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        auth = self.server.auth
        if auth is not None and not auth.allows(self.headers.get("Authorization")):
            self._reply(401, b"authentication required\n", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(self.server.registry), content_type)
        elif path == "/":
            page = b'<html><body><a href="/metrics">schoolgate metrics</a></body></html>\n'
            self._reply(200, page, "text/html; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise MetricsServerError(
            f"metrics.tls: cannot load certificate {cert_file} and key {key_file}: {exc}"
        ) from None
    return context


class MetricsServer:
    """`/metrics` for Prometheus on the configured address, on a daemon thread."""

    def __init__(self, config: MetricsConfig, registry: CollectorRegistry = REGISTRY) -> None:
        self.config = config
        self.registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the configured port is 0)."""
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.config.cert_file is not None else "http"

    def start(self) -> None:
        """Bind and serve; raises MetricsServerError with the reason when it cannot."""
        config = self.config
        auth = None
        if config.password_file is not None:
            auth = BasicAuth.from_file(config.username, config.password_file)
        tls = None
        if config.cert_file is not None and config.key_file is not None:
            tls = tls_context(config.cert_file, config.key_file)
        if auth is not None and tls is None:
            log.warning("metrics basic auth without TLS: the password crosses the network in clear")
        try:
            server = _Server((config.listen_host, config.listen_port), self.registry, auth, tls)
        except OSError as exc:
            raise MetricsServerError(
                f"metrics: cannot listen on {config.listen_host}:{config.listen_port}: {exc}"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="schoolgate-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "metrics on %s://%s:%d/metrics%s",
            self.scheme,
            config.listen_host,
            self.port,
            " (basic auth)" if auth else "",
        )

    def stop(self) -> None:
        """Stop serving; safe to call twice or before start."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def start_metrics_server(config: MetricsConfig) -> MetricsServer | None:
    """Start the endpoint if enabled. A failure is logged, never fatal: filtering pupils' uploads
    matters more than graphs, and Prometheus's `up` (SchoolgateDown) reports the missing target."""
    if not config.enabled:
        return None
    server = MetricsServer(config)
    try:
        server.start()
    except MetricsServerError as exc:
        log.error("schoolgate metrics not served: %s", exc)
        return None
    except Exception:  # whatever else goes wrong here must not stop the proxy
        log.exception("schoolgate metrics not served")
        return None
    return server
