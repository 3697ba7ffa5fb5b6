"""The `metrics:` configuration section: where the Prometheus endpoint listens, basic auth, TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schoolgate.config_reader import Node, listen_host


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint: loopback by default; basic auth and TLS when both files are set."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = 9861
    username: str = "prometheus"
    password_file: Path | None = None  # basic auth on when set
    cert_file: Path | None = None  # TLS on when set (with key_file)
    key_file: Path | None = None


def parse_metrics(node: Node) -> MetricsConfig:
    node.mapping(allowed={"enabled", "listen_host", "listen_port", "basic_auth", "tls"})
    defaults = MetricsConfig()
    auth = node.child("basic_auth")
    auth.mapping(allowed={"username", "password_file"})
    password_file = auth.child("password_file").path_value()
    if not auth.missing and password_file is None:
        auth.child("password_file").fail("is required to turn basic auth on")
    tls = node.child("tls")
    tls.mapping(allowed={"cert_file", "key_file"})
    cert_file = tls.child("cert_file").path_value()
    key_file = tls.child("key_file").path_value()
    if not tls.missing:
        for key, value in (("cert_file", cert_file), ("key_file", key_file)):
            if value is None:
                tls.child(key).fail("is required to turn TLS on")
    return MetricsConfig(
        enabled=node.child("enabled").flag(defaults.enabled),
        listen_host=listen_host(node.child("listen_host"), defaults.listen_host),
        listen_port=node.child("listen_port").integer(
            defaults.listen_port, minimum=1, maximum=65535
        ),
        username=auth.child("username").text(defaults.username),
        password_file=password_file,
        cert_file=cert_file,
        key_file=key_file,
    )
