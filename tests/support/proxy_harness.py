"""Real processes for proxy tests: a recording HTTPS upstream, the schoolgate proxy, clients.

Everything listens on 127.0.0.1. Test host names (`*.schoolgate.localhost`) do not resolve here,
so the proxy runs in its own mount namespace with a private /etc/hosts that maps them to
127.0.0.1: the proxy resolves names exactly as in production (getaddrinfo), and nothing on the
machine outside that one process sees the change.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.media.hashing import pdq_hash
from tests.support.certs import takes_names
from tests.support.netns import SERVER_IP, call_in_netns

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

MEDIA_HOST = "media.schoolgate.localhost"  # catalogued: uploads inspected
CDN_HOST = "cdn.schoolgate.localhost"  # catalogued download CDN
OTHER_HOST = "other.schoolgate.localhost"  # not catalogued: passed through
BLOCKED_HOST = "e2e.schoolgate.localhost"  # catalogued, not inspectable: refused by SNI
PINNED_HOST = "pinned.schoolgate.localhost"  # catalogued, inspection: pinned_native
TEST_HOSTS = (MEDIA_HOST, CDN_HOST, OTHER_HOST, BLOCKED_HOST, PINNED_HOST)
UPSTREAM_CA_NAME = "schoolgate test upstream CA"

TEST_CATALOG: dict[str, Any] = {
    "version": 1,
    "apps": {
        "testshare": {
            "name": "Test Share",
            "hosts": [MEDIA_HOST],
            "inspection": "full",
            "when_not_inspectable": "allow_and_log",
            "upload_routes": [
                {"method": "POST", "path": "/upload/multipart", "body": "multipart"},
                {"method": "PUT", "path": "/upload/raw/*", "body": "raw"},
                {
                    "method": "POST",
                    "path": "/upload/chunked/*",
                    "body": "raw",
                    "protocol": "content_range",
                },
            ],
            "download_hosts": [CDN_HOST],
        },
        "teste2e": {
            "name": "Test E2E",
            "hosts": [BLOCKED_HOST],
            "inspection": "none",
            "when_not_inspectable": "block_by_sni",
        },
        "testpinned": {
            "name": "Test Pinned",
            "hosts": [PINNED_HOST],
            "inspection": "pinned_native",
            "when_not_inspectable": "allow_and_log",
        },
    },
}


# ---------------------------------------------------------------------------------------------
# Throwaway PKI for the upstream


@dataclass(frozen=True)
class UpstreamPki:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_upstream_pki(directory: Path, extra_hosts: Sequence[str] = ()) -> UpstreamPki:
    """A CA and one leaf certificate for every test host (plus `extra_hosts`) and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, UPSTREAM_CA_NAME)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    names: list[x509.GeneralName] = [x509.DNSName(h) for h in (*TEST_HOSTS, *extra_hosts)]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MEDIA_HOST)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = UpstreamPki(directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key")
    pki.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


# ---------------------------------------------------------------------------------------------
# Upstream server


@dataclass(frozen=True)
class Received:
    method: str
    host: str
    path: str
    sha256: str
    length: int


@dataclass
class Upstream:
    """An HTTPS server on 127.0.0.1 that records every complete request it receives."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)  # GET /files/NAME serves these
    # GET /stream/NAME serves the pieces these make, chunked (no Content-Length), as image/jpeg
    streams: dict[str, Callable[[], Iterator[bytes]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, path_prefix: str = "") -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path.startswith(path_prefix)]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = bytearray()
            for _ in range(100_000):  # bounded: a test body never has this many chunks
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks += self.rfile.read(size)
                self.rfile.readline()
            return bytes(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Head and body in one write: written apart, the body waits for the client's delayed
        # ACK of the head (Nagle), and every small exchange costs 40 ms that no real server adds.
        buffered: list[bytes] = getattr(self, "_headers_buffer")  # noqa: B009 - untyped in typeshed
        head = b"".join(buffered) + b"\r\n"
        buffered.clear()
        self.wfile.write(head + body if self.command != "HEAD" else head)

    def _handle(self) -> None:
        body = self._body()
        record = Received(
            self.command,
            self.headers.get("Host", ""),
            self.path,
            hashlib.sha256(body).hexdigest(),
            len(body),
        )
        upstream = self.server.upstream
        with upstream.lock:
            upstream.received.append(record)
        if self.command == "GET" and self.path.startswith("/stream/"):
            make = upstream.streams.get(self.path.removeprefix("/stream/"))
            if make is None:
                self._reply(404, b"not found", "text/plain")
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for piece in make():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            except (ConnectionError, ssl.SSLError):
                self.close_connection = True  # the proxy cut the download off
            return
        if self.command in ("GET", "HEAD") and self.path.startswith("/files/"):
            data = upstream.files.get(self.path.removeprefix("/files/"))
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if data is None:
                self._reply(404, b"not found", "text/plain")
            elif wanted is not None:  # as CDNs do: one range, 206
                first = int(wanted[1])
                last = min(int(wanted[2] or len(data) - 1), len(data) - 1)
                self.send_response(206)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
                self.send_header("Content-Length", str(last - first + 1))
                self.end_headers()
                self.wfile.write(data[first : last + 1])
            else:
                self._reply(200, data, "application/octet-stream")
            return
        reply: dict[str, object] = {"ok": True, "sha256": record.sha256, "length": record.length}
        if self.path.partition("?")[0].endswith("/upload_session/start"):  # as Dropbox answers
            reply["session_id"] = "sess-" + hashlib.sha256(os.urandom(8)).hexdigest()[:16]
        self._reply(200, json.dumps(reply).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_PATCH = do_HEAD = do_DELETE = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: Upstream


@dataclass
class RunningUpstream:
    upstream: Upstream
    server: _Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_upstream(pki: UpstreamPki) -> RunningUpstream:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    takes_names(context)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    upstream = Upstream(port=server.server_address[1])
    server.upstream = upstream
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    return RunningUpstream(upstream, server, thread)


# ---------------------------------------------------------------------------------------------
# The upstream, bound inside the server namespace


class _NamespacedServer(_Server):
    def server_bind(self) -> None:
        # HTTPServer.server_bind would reverse-resolve the address (getfqdn): a DNS query that
        # must not leave the namespaces. The name is not used by the handler.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = SERVER_IP, self.server_address[1]


def _bind_server(port: int) -> _Server:
    return _NamespacedServer((SERVER_IP, port), _Handler)


@dataclass
class NsUpstream:
    """One recording upstream served on SERVER_IP:443 (HTTPS) and SERVER_IP:80 (plain HTTP)."""

    upstream: Upstream
    servers: list[_Server]
    threads: list[threading.Thread]

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


def start_upstream_in(ns: str, pki: UpstreamPki) -> NsUpstream:
    """proxy_harness's recording upstream, listening on SERVER_IP:443 and :80 inside `ns`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    takes_names(context)
    upstream = Upstream(port=443)
    running = NsUpstream(upstream, [], [])
    try:
        for port in (443, 80):
            server = call_in_netns(ns, functools.partial(_bind_server, port))
            running.servers.append(server)
            if port == 443:
                server.socket = context.wrap_socket(server.socket, server_side=True)
            server.upstream = upstream
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
            thread.daemon = True
            thread.start()
            running.threads.append(thread)
    except BaseException:
        running.stop()
        raise
    return running


# ---------------------------------------------------------------------------------------------
# The proxy process


def bank_photo(data_dir: Path, photo: Image.Image, bank: str = "incident-test") -> None:
    """Put a benign photo's PDQ hash into a test bank in the proxy's data dir."""
    digest = pdq_hash(photo)
    with BankStore(data_dir / "banks.sqlite") as store:
        store.ensure_bank(bank)
        store.add_signals(
            bank, [SignalInput(SignalType.PDQ, digest.hex, digest.quality)], source="test"
        )


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` every 0.1 s; fail the test after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# Ports for the proxies and servers tests start, below the kernel's ephemeral range (32768 up),
# a band per xdist worker. Ports the kernel handed out (bind to 0) were handed out again: a
# proxy killed and restarted on its port by one worker found it taken by another worker's
# proxy, which had been given the same number meanwhile (a fresh-clone `make test`, session 44).
_PORT_BASE, _PORT_BAND = 10000, 2700


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, from this worker's own band."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = _PORT_BASE + (int(worker) % 8 if worker.isdigit() else 0) * _PORT_BAND
    for port in random.Random().sample(range(low, low + _PORT_BAND), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{low + _PORT_BAND - 1}")


def can_isolate_hosts() -> bool:
    """Whether this machine lets us give one process its own /etc/hosts (root + unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, timeout=10, check=False
    )
    return probe.returncode == 0


def write_config(
    directory: Path,
    port: int,
    pki: UpstreamPki,
    *,
    models: list[dict[str, Any]] | None = None,
    groups: list[dict[str, Any]] | None = None,
    proxy: dict[str, Any] | None = None,
    catalog_data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A schoolgate config for the test proxy (data dir comes from SCHOOLGATE_DATA_DIR).

    `catalog_data` replaces TEST_CATALOG as the test endpoints file; `extra` adds top-level
    sections (e.g. `alerts`)."""
    catalog = directory / "test-endpoints.yaml"
    catalog.write_text(yaml.safe_dump(catalog_data or TEST_CATALOG))
    default_groups = [
        {"name": "monitored", "subnets": ["127.0.0.2/32"], "mode": "monitor"},
        {"name": "pupils", "subnets": ["0.0.0.0/0", "::/0"], "mode": "block"},
    ]
    config = {
        "classifier": {"models": models or []},
        "policy": {"groups": groups or default_groups, "default_group": "pupils"},
        "proxy": {
            "mode": "regular",
            "listen_host": "127.0.0.1",
            "listen_port": port,
            "endpoints_files": [str(catalog)],
            "upstream_ca_file": str(pki.ca_pem),
            "workers": 2,
            "inspect_timeout_s": 30,
            **(proxy or {}),
        },
        # Parallel suites would all want the default metrics port; the metrics e2e sets its own.
        "metrics": {"enabled": False},
        **(extra or {}),
    }
    path = directory / "schoolgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> Path:
        return self.data_dir / "ca" / "mitmproxy-ca-cert.pem"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, Any]]:
        """Decisions from the audit log (JSON lines)."""
        records: list[dict[str, Any]] = []
        for path in sorted((self.data_dir / "audit").glob("*.jsonl*")):
            for line in path.read_text().splitlines():
                if line.strip():
                    records.append(json.loads(line))
        return [r for r in records if "decision" in r]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_proxy(
    config_path: Path,
    data_dir: Path,
    port: int,
    workdir: Path,
    *,
    extra_hosts: Sequence[str] = (),
    argv: Sequence[str] | None = None,
    ready_line: str = "schoolgate listening on",
) -> ProxyProcess:
    """`schoolgate run` as a real subprocess, in a mount namespace with the test /etc/hosts.

    `extra_hosts` also resolve to 127.0.0.1 there; `argv` runs another proxy command line
    instead (e.g. `mitmdump -s addons/schoolgate/addons/entry.py`), ready once its log shows
    `ready_line`.
    """
    hosts = workdir / "hosts"
    names = " ".join((*TEST_HOSTS, *extra_hosts))
    hosts.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
    if argv is None:
        argv = [str(VENV_BIN / "schoolgate"), "run", "--config", str(config_path)]
    command = f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && exec {shlex.join(argv)}"
    env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("SCHOOLGATE_CONFIG", None)
    log_path = workdir / "proxy.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    proxy = ProxyProcess(process, port, data_dir, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"proxy exited with {process.returncode}:\n{proxy.log()}")
        if ready_line in proxy.log():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return proxy
        time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"proxy did not start listening within 60 s:\n{proxy.log()}")


# ---------------------------------------------------------------------------------------------
# Clients


def client_ssl_context(*cafiles: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=None)
    context.load_verify_locations(cafile=str(cafiles[0]))
    for extra in cafiles[1:]:
        context.load_verify_locations(cafile=str(extra))
    return context


def tunnel_peer_certificate(
    proxy_port: int,
    host: str,
    port: int,
    cafile: Path,
    source: str = "127.0.0.1",
    alpn: list[str] | None = None,
) -> dict[str, Any]:
    """CONNECT through the proxy (from `source`) and return the server certificate shown."""
    with socket.create_connection(
        ("127.0.0.1", proxy_port), timeout=10, source_address=(source, 0)
    ) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 65536:
            chunk = raw.recv(4096)
            if not chunk:
                break
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(f"CONNECT refused: {reply[:200]!r}")
        context = client_ssl_context(cafile)
        if alpn:  # another TLS client: a different ClientHello (and JA4)
            context.set_alpn_protocols(alpn)
        with context.wrap_socket(raw, server_hostname=host) as tls:
            cert: dict[str, Any] = tls.getpeercert()  # type: ignore[assignment]
            return cert


def issuer_common_name(cert: dict[str, Any]) -> str:
    for rdn in cert.get("issuer", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def multipart_body(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part and one text part (a caption)."""
    boundary = "----schoolgate-test-" + hashlib.sha256(data).hexdigest()[:16]
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\nhello\r\n'.encode(),
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
