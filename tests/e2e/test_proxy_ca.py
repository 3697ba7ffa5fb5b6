"""End to end: `schoolgate run` makes the name-constrained CA and serves leaves that chain to it.

Python's ssl (OpenSSL) enforces name constraints, so a verified handshake proves the leaf fits
them. The test upstream's certificate also names hosts outside the catalog and 127.0.0.1: the
proxy copies upstream names into its leaves, and must drop those or clients would refuse them.
"""

from __future__ import annotations

import copy
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from schoolgate.gateway.ca import KEY_AND_CERT, load_ca
from tests.support.proxy_harness import (
    CDN_HOST,
    MEDIA_HOST,
    OTHER_HOST,
    TEST_CATALOG,
    UPSTREAM_CA_NAME,
    ProxyProcess,
    RunningUpstream,
    UpstreamPki,
    client_ssl_context,
    free_port,
    issuer_common_name,
    start_proxy,
    tunnel_peer_certificate,
    write_config,
)
from tests.support.stack import needs_private_hosts, recording_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]


@dataclass
class Stack:
    work: Path
    data_dir: Path
    pki: UpstreamPki
    upstream: RunningUpstream
    proxy: ProxyProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("proxy-ca")
    with recording_stack(work) as running:
        yield Stack(work, running.data_dir, running.pki, running.upstream, running.proxy)


def san_names(cert: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(kind), str(value)) for kind, value in cert.get("subjectAltName", ())]


def test_run_creates_a_constrained_ca_covering_the_catalog(stack: Stack) -> None:
    ca = load_ca(stack.data_dir / "ca")
    assert ca is not None
    assert ca.constrained
    assert ca.policy.permits_dns(MEDIA_HOST)
    assert ca.policy.permits_dns(CDN_HOST)
    assert not ca.policy.permits_dns(OTHER_HOST)
    assert "created a name-constrained CA" in stack.proxy.log()
    served = x509.load_pem_x509_certificate(stack.proxy.ca_pem.read_bytes())
    assert served == ca.cert  # the file devices install is the CA mitmproxy signs with
    assert (stack.data_dir / "ca" / KEY_AND_CERT).stat().st_mode & 0o077 == 0


def test_intercepted_host_gets_a_leaf_that_verifies_under_the_constrained_ca(
    stack: Stack,
) -> None:
    port = stack.upstream.upstream.port
    cert = tunnel_peer_certificate(stack.proxy.port, MEDIA_HOST, port, stack.proxy.ca_pem)
    assert issuer_common_name(cert).startswith("schoolgate CA ")
    names = san_names(cert)
    assert ("DNS", MEDIA_HOST) in names
    # The upstream certificate also names other.schoolgate.localhost and 127.0.0.1: dropped.
    assert all(kind == "DNS" for kind, _ in names), names
    assert ("DNS", OTHER_HOST) not in names
    with httpx.Client(
        proxy=stack.proxy.url,
        verify=client_ssl_context(stack.proxy.ca_pem, stack.pki.ca_pem),
        timeout=30,
    ) as client:
        response = client.get(f"https://{CDN_HOST}:{port}/files/missing")
    assert response.status_code == 404  # decrypted, forwarded, answered by the upstream


def test_non_catalogued_host_still_passes_through(stack: Stack) -> None:
    port = stack.upstream.upstream.port
    cert = tunnel_peer_certificate(stack.proxy.port, OTHER_HOST, port, stack.pki.ca_pem)
    assert issuer_common_name(cert) == UPSTREAM_CA_NAME
    with pytest.raises(ssl.SSLCertVerificationError):
        tunnel_peer_certificate(stack.proxy.port, OTHER_HOST, port, stack.proxy.ca_pem)


def test_restart_with_a_new_app_warns_that_the_ca_does_not_cover_it(stack: Stack) -> None:
    """A catalog that grew after the CA was made: the same CA is kept and the gap named."""
    work = stack.work / "grown"
    work.mkdir()
    catalog = copy.deepcopy(TEST_CATALOG)
    catalog["apps"]["newshare"] = {
        "hosts": ["uploads.newshare.test"],
        "inspection": "full",
        "when_not_inspectable": "allow_and_log",
    }
    port = free_port()
    config = write_config(work, port, stack.pki, catalog_data=catalog)
    before = (stack.data_dir / "ca" / KEY_AND_CERT).read_bytes()
    proxy = start_proxy(config, stack.data_dir, port, work)
    try:
        log = proxy.log()
    finally:
        proxy.stop()
    assert "catalogued domain uploads.newshare.test is not covered" in log
    assert "schoolgate ca init --force" in log
    assert (stack.data_dir / "ca" / KEY_AND_CERT).read_bytes() == before
