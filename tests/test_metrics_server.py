"""The metrics endpoint over real sockets on 127.0.0.1: plain, basic auth, TLS, and its config."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from schoolgate.config import parse_config
from schoolgate.errors import ConfigError
from schoolgate.monitoring.server import MetricsServer, MetricsServerError, start_metrics_server
from schoolgate.monitoring.settings import MetricsConfig

PASSWORD = "correct horse battery staple"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "schoolgate metrics test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "metrics.crt", directory / "metrics.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def password_file(directory: Path, text: str = PASSWORD + "\n") -> Path:
    path = directory / "metrics.password"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def serve() -> Iterator[list[MetricsServer]]:
    """Servers started by a test, stopped after it."""
    servers: list[MetricsServer] = []
    yield servers
    for server in servers:
        server.stop()


def start(servers: list[MetricsServer], config: MetricsConfig) -> MetricsServer:
    server = MetricsServer(config)
    server.start()
    servers.append(server)
    return server


def test_plain_endpoint_serves_the_exposition(serve: list[MetricsServer]) -> None:
    server = start(serve, MetricsConfig(listen_port=0))
    response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "schoolgate_build_info{" in response.text
    assert httpx.get(f"http://127.0.0.1:{server.port}/nope", timeout=10).status_code == 404


def test_openmetrics_is_served_when_asked_for(serve: list[MetricsServer]) -> None:
    server = start(serve, MetricsConfig(listen_port=0))
    response = httpx.get(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_basic_auth(serve: list[MetricsServer], tmp_path: Path) -> None:
    config = MetricsConfig(listen_port=0, username="prom", password_file=password_file(tmp_path))
    server = start(serve, config)
    url = f"http://127.0.0.1:{server.port}/metrics"

    missing = httpx.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic ")
    assert "schoolgate" not in missing.text
    for user, password in (("prom", "wrong"), ("other", PASSWORD), ("prom", PASSWORD + "x")):
        assert httpx.get(url, auth=(user, password), timeout=10).status_code == 401
    malformed = httpx.get(url, headers={"Authorization": "Basic !!!not-base64"}, timeout=10)
    assert malformed.status_code == 401

    ok = httpx.get(url, auth=("prom", PASSWORD), timeout=10)
    assert ok.status_code == 200
    assert "schoolgate_build_info{" in ok.text


def test_tls_with_a_self_signed_certificate(serve: list[MetricsServer], tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    config = MetricsConfig(
        listen_port=0,
        password_file=password_file(tmp_path),
        cert_file=cert_file,
        key_file=key_file,
    )
    server = start(serve, config)
    assert server.scheme == "https"
    trust = ssl.create_default_context(cafile=str(cert_file))
    url = f"https://127.0.0.1:{server.port}/metrics"

    ok = httpx.get(url, auth=("prometheus", PASSWORD), verify=trust, timeout=10)
    assert ok.status_code == 200
    assert "schoolgate_build_info{" in ok.text
    assert httpx.get(url, verify=trust, timeout=10).status_code == 401
    with pytest.raises(httpx.ConnectError):  # untrusted certificate
        httpx.get(url, timeout=10)
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no exposition
        httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)


def test_a_stalled_tls_client_does_not_block_others(
    serve: list[MetricsServer], tmp_path: Path
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server = start(serve, MetricsConfig(listen_port=0, cert_file=cert_file, key_file=key_file))
    trust = ssl.create_default_context(cafile=str(cert_file))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        # Connected, never says hello: the next scrape must still be answered.
        response = httpx.get(f"https://127.0.0.1:{server.port}/metrics", verify=trust, timeout=5)
    assert response.status_code == 200


def test_start_refuses_unreadable_or_empty_secrets(tmp_path: Path) -> None:
    with pytest.raises(MetricsServerError, match="cannot be read"):
        MetricsServer(MetricsConfig(listen_port=0, password_file=tmp_path / "absent")).start()
    with pytest.raises(MetricsServerError, match="empty"):
        MetricsServer(
            MetricsConfig(listen_port=0, password_file=password_file(tmp_path, "\n"))
        ).start()
    with pytest.raises(MetricsServerError, match="certificate"):
        MetricsServer(
            MetricsConfig(listen_port=0, cert_file=tmp_path / "a", key_file=tmp_path / "b")
        ).start()


def test_a_metrics_failure_at_start_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert start_metrics_server(MetricsConfig(listen_port=port)) is None
    assert "metrics not served" in caplog.text
    assert start_metrics_server(MetricsConfig(enabled=False)) is None


def test_metrics_config_defaults_and_errors(tmp_path: Path) -> None:
    default = parse_config("", "test.yaml").metrics
    assert (default.enabled, default.listen_host, default.listen_port) == (True, "127.0.0.1", 9861)
    assert default.password_file is None
    assert default.cert_file is None

    full = parse_config(
        "metrics:\n  listen_host: 0.0.0.0\n  listen_port: 9999\n"
        "  basic_auth: {username: scraper, password_file: /etc/schoolgate/pw}\n"
        "  tls: {cert_file: /etc/schoolgate/c.pem, key_file: /etc/schoolgate/k.pem}\n",
        "test.yaml",
    ).metrics
    assert full.listen_port == 9999
    assert full.username == "scraper"
    assert full.password_file == Path("/etc/schoolgate/pw")
    assert full.key_file == Path("/etc/schoolgate/k.pem")

    problems = {
        "metrics:\n  tls: {cert_file: /c.pem}\n": "metrics.tls.key_file: is required",
        "metrics:\n  basic_auth: {username: x}\n": "metrics.basic_auth.password_file",
        "metrics:\n  listen_host: metrics.local\n": "metrics.listen_host",
        "metrics:\n  port: 1\n": "metrics.port: unknown key",
    }
    for text, message in problems.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(text, "test.yaml")
