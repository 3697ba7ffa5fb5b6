"""Learnt upload hosts and the `mitmdump -s addons/schoolgate/addons/entry.py` entry point,
through real processes.

Everything runs on 127.0.0.1; the proxy gets a private /etc/hosts (tests/support/proxy_harness.py).
Benign images only: the "banned" image is a scikit-image photo placed in a test bank.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from schoolgate.banks.model import SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.media.hashing import pdq_hash
from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    REPO_ROOT,
    TEST_CATALOG,
    UPSTREAM_CA_NAME,
    VENV_BIN,
    ProxyProcess,
    RunningUpstream,
    UpstreamPki,
    client_ssl_context,
    free_port,
    issuer_common_name,
    make_upstream_pki,
    multipart_body,
    start_proxy,
    start_upstream,
    tunnel_peer_certificate,
    write_config,
)
from tests.support.stack import needs_private_hosts

pytestmark = [pytest.mark.slow, needs_private_hosts]

API_HOST = "api.learnshare.localhost"  # catalogued: its replies hand out upload URLs
UPLOAD_HOST = "uploads.learnt-storage.localhost"  # in no app's hosts: only learnable
LEARN_HOSTS = (API_HOST, UPLOAD_HOST)
LEARN_PATH = "/files/attachments.json"

LEARN_CATALOG: dict[str, Any] = {
    "version": 1,
    "apps": {
        **TEST_CATALOG["apps"],
        "testlearn": {
            "name": "Test Learn",
            "hosts": [API_HOST],
            "inspection": "full",
            "when_not_inspectable": "allow_and_log",
            "learn": [
                {
                    "method": "GET",
                    "path": LEARN_PATH,
                    "json": "$.attachments[*].upload_url",
                    "allow_hosts": ["*.learnt-storage.localhost"],
                    "upload": {"method": "PUT", "body": "raw"},
                }
            ],
        },
    },
}


def make_bank(data_dir: Path, photo: Image.Image) -> None:
    with BankStore(data_dir / "banks.sqlite") as store:
        store.create_bank("incident-test")
        digest = pdq_hash(photo)
        store.add_signals(
            "incident-test",
            [SignalInput(SignalType.PDQ, digest.hex, digest.quality)],
            source="test",
        )


@dataclass
class Env:
    work: Path
    data_dir: Path
    pki: UpstreamPki
    upstream: RunningUpstream
    banned_jpeg: bytes  # a re-encoded copy of the banked photo: only its PDQ hash is banked

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.upstream.upstream.port}{path}"

    def client(self, proxy: ProxyProcess) -> httpx.Client:
        context = client_ssl_context(proxy.ca_pem, self.pki.ca_pem)
        return httpx.Client(proxy=proxy.url, verify=context, timeout=60)


@pytest.fixture
def env(tmp_path: Path, benign_photos: dict[str, Image.Image]) -> Iterator[Env]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    banned = benign_photos["chelsea"]
    make_bank(data_dir, banned)
    pki = make_upstream_pki(tmp_path / "pki", extra_hosts=LEARN_HOSTS)
    upstream = start_upstream(pki)
    try:
        yield Env(tmp_path, data_dir, pki, upstream, encode(banned, "JPEG", quality=70))
    finally:
        upstream.stop()


def put_photo(env: Env, client: httpx.Client, path: str, data: bytes) -> httpx.Response:
    return client.put(
        env.url(UPLOAD_HOST, path),
        content=data,
        headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
    )


def upload_multipart(env: Env, client: httpx.Client, name: str, photo: bytes) -> httpx.Response:
    body, content_type = multipart_body("file", f"{name}.jpg", photo, "image/jpeg")
    return client.post(
        env.url(MEDIA_HOST, f"/upload/multipart?{name}"),
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/json"},
    )


def test_learnt_upload_host_is_intercepted_after_the_learning_response(env: Env) -> None:
    port = free_port()
    config = write_config(env.work, port, env.pki, catalog_data=LEARN_CATALOG)
    proxy = start_proxy(config, env.data_dir, port, env.work, extra_hosts=LEARN_HOSTS)
    upstream = env.upstream.upstream
    try:
        # Before: a host the app's learn rule may hand out is the app's already (issue 17: a
        # connection opened before the learning reply used to pass unread), so what is sent
        # there is judged whole even before any reply names it.
        cert = tunnel_peer_certificate(port, UPLOAD_HOST, upstream.port, proxy.ca_pem)
        assert issuer_common_name(cert) != UPSTREAM_CA_NAME
        with env.client(proxy) as client:
            before = put_photo(env, client, "/upload/before", env.banned_jpeg)
        assert before.status_code == 403, before.text
        assert upstream.requests("/upload/before") == []

        # The app's API hands out an upload URL on the (allowed) upload host.
        upload_url = env.url(UPLOAD_HOST, "/upload/attachments/1/photo.jpg?signature=abc")
        upstream.files[LEARN_PATH.removeprefix("/files/")] = json.dumps(
            {"attachments": [{"id": "1", "upload_url": upload_url}]}
        ).encode()
        with env.client(proxy) as client:
            learnt = client.get(env.url(API_HOST, LEARN_PATH))
        assert learnt.status_code == 200, learnt.text
        assert learnt.json()["attachments"][0]["upload_url"] == upload_url

        # After: the host is intercepted (our CA signs its certificate) ...
        try:
            cert = tunnel_peer_certificate(port, UPLOAD_HOST, upstream.port, proxy.ca_pem)
        except ssl.SSLCertVerificationError:
            pytest.fail(f"{UPLOAD_HOST} is still passed through after the learning response")
        assert issuer_common_name(cert) != UPSTREAM_CA_NAME
        # ... and the banked photo PUT to the learnt URL is refused and never reaches upstream.
        with env.client(proxy) as client:
            blocked = client.put(
                upload_url,
                content=env.banned_jpeg,
                headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
            )
        assert blocked.status_code == 403, blocked.text
        assert blocked.json()["error"] == "blocked_by_school_network"
        assert upstream.requests("/upload/attachments") == []
        record = proxy.audit_records()[-1]
        assert record["decision"] == "block"
        assert record["client"]["app"] == "testlearn"
        assert record["matches"][0]["bank"] == "incident-test"
    finally:
        proxy.stop()


def test_mitmdump_entry_script_blocks_banked_and_allows_benign(
    env: Env, benign_photos: dict[str, Image.Image]
) -> None:
    port = free_port()
    config = write_config(env.work, port, env.pki)
    confdir = env.data_dir / "ca"
    argv = [
        str(VENV_BIN / "mitmdump"),
        "-s",
        str(REPO_ROOT / "addons" / "schoolgate" / "addons" / "entry.py"),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={env.pki.ca_pem}",
        "--set",
        f"schoolgate_config={config}",
    ]
    proxy = start_proxy(config, env.data_dir, port, env.work, argv=argv, ready_line="listening at")
    upstream = env.upstream.upstream
    try:
        assert "schoolgate configuration loaded" in proxy.log()
        benign = encode(benign_photos["astronaut"], "JPEG", quality=85)
        with env.client(proxy) as client:
            banned = upload_multipart(env, client, "banned", env.banned_jpeg)
            allowed = upload_multipart(env, client, "benign", benign)
        assert banned.status_code == 403, banned.text
        assert banned.json()["error"] == "blocked_by_school_network"
        assert allowed.status_code == 200, allowed.text
        benign_body, _ = multipart_body("file", "benign.jpg", benign, "image/jpeg")
        assert allowed.json()["sha256"] == hashlib.sha256(benign_body).hexdigest()
        received = [r.path for r in upstream.requests("/upload/multipart")]
        assert received == ["/upload/multipart?benign"]
        decisions = [r["decision"] for r in proxy.audit_records()]
        assert decisions == ["block", "allow"]
    finally:
        proxy.stop()
