"""End to end: `schoolgate run` as a real process between real clients (httpx, curl) and a real
HTTPS upstream, all on 127.0.0.1. Benign images only: the "banned" image is a scikit-image photo
placed in a test bank, and the classifier is the generated red-square model."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import encode
from tests.support.onnx_models import (
    PATTERN_INPUT_SIZE,
    PATTERN_LABEL,
    make_pattern_model,
    pattern_image,
)
from tests.support.proxy_harness import (
    BLOCKED_HOST,
    CDN_HOST,
    MEDIA_HOST,
    OTHER_HOST,
    PINNED_HOST,
    UPSTREAM_CA_NAME,
    ProxyProcess,
    RunningUpstream,
    client_ssl_context,
    issuer_common_name,
    multipart_body,
    tunnel_peer_certificate,
)
from tests.support.stack import needs_private_hosts, recording_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]


CLIENT_MAC = "02:00:5e:00:53:01"
CLIENT_HOST = "pupil-laptop-7"


@dataclass
class Stack:
    upstream: RunningUpstream
    proxy: ProxyProcess
    upstream_ca: Path
    banned_jpeg: bytes  # its PDQ hash is in the test bank
    banned_photo: Image.Image

    def client(self) -> httpx.Client:
        context = client_ssl_context(self.proxy.ca_pem, self.upstream_ca)
        return httpx.Client(proxy=self.proxy.url, verify=context, timeout=60)

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.upstream.upstream.port}{path}"


def pattern_model_yaml(path: Path) -> dict[str, Any]:
    make_pattern_model(path)
    return {
        "name": "pattern",
        "adapter": "onnx",
        "path": str(path),
        "thresholds": {PATTERN_LABEL: 0.5},
        "input_size": PATTERN_INPUT_SIZE,
        "channel_order": "RGB",
        "layout": "NCHW",
        "scale": 1 / 255,
        "labels": [PATTERN_LABEL],
        "output_activation": "none",
        "time_budget_ms": 10000,
    }


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("proxy")
    banned_photo = benign_photos["chelsea"]
    # The gateway's DHCP server knows the test client (127.0.0.1) as a named device.
    leases = work / "dnsmasq.leases"
    leases.write_text(f"{int(time.time()) + 3600} {CLIENT_MAC} 127.0.0.1 {CLIENT_HOST} *\n")
    with recording_stack(
        work,
        banked=banned_photo,
        models=[pattern_model_yaml(work / "pattern.onnx")],
        proxy={"dhcp_leases": [str(leases)]},
    ) as running:
        banned_jpeg = encode(banned_photo, "JPEG", quality=90)
        yield Stack(running.upstream, running.proxy, running.upstream_ca, banned_jpeg, banned_photo)


def upload_multipart(
    stack: Stack, client: httpx.Client, data: bytes, **headers: str
) -> httpx.Response:
    body, content_type = multipart_body("file", "photo.jpg", data, "image/jpeg")
    return client.post(
        stack.url(MEDIA_HOST, "/upload/multipart"),
        content=body,
        headers={"Content-Type": content_type, **headers},
    )


def received_sha256(stack: Stack, prefix: str) -> list[str]:
    return [r.sha256 for r in stack.upstream.upstream.requests(prefix)]


def test_benign_multipart_upload_arrives_byte_identical(
    stack: Stack, benign_photos: dict[str, Image.Image]
) -> None:
    photo = encode(benign_photos["astronaut"], "JPEG", quality=85)
    body, content_type = multipart_body("file", "astronaut.jpg", photo, "image/jpeg")
    with stack.client() as client:
        response = client.post(
            stack.url(MEDIA_HOST, "/upload/multipart"),
            content=body,
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 200, response.text
    sent = hashlib.sha256(body).hexdigest()
    assert response.json()["sha256"] == sent
    assert sent in received_sha256(stack, "/upload/multipart")
    decisions = [
        r
        for r in stack.proxy.audit_records()
        if r["hashes"].get("sha256") == hashlib.sha256(photo).hexdigest()
    ]
    assert decisions
    assert decisions[-1]["decision"] == "allow"


def test_banked_image_is_blocked_and_never_reaches_upstream(stack: Stack) -> None:
    # A re-encoded copy: the PDQ bank entry still matches, the bytes differ from any bank entry.
    copy = encode(stack.banned_photo, "JPEG", quality=70)
    before = len(stack.upstream.upstream.requests())
    with stack.client() as client:
        response = upload_multipart(stack, client, copy, Accept="application/json")
    assert response.status_code == 403
    assert response.json()["error"] == "blocked_by_school_network"
    assert copy not in response.content
    assert len(stack.upstream.upstream.requests()) == before  # the upstream received nothing
    record = stack.proxy.audit_records()[-1]
    assert record["decision"] == "block"
    assert record["matches"]
    assert record["matches"][0]["bank"] == "incident-test"
    assert record["client"]["app"] == "testshare"
    assert record["client"]["mac"] == CLIENT_MAC
    assert record["client"]["hostname"] == CLIENT_HOST


def curl_upload(stack: Stack, tmp_path: Path, data: bytes, *extra: str) -> tuple[int, str]:
    """Upload `data` as a multipart file with curl through the proxy; (status, body)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: add it to the system dependencies")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(data)
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(stack.proxy.ca_pem.read_bytes() + stack.upstream_ca.read_bytes())
    result = subprocess.run(
        [
            curl, "--silent", "--show-error", "--max-time", "60",
            "--proxy", stack.proxy.url, "--cacert", str(cafile),
            "-F", f"file=@{photo};type=image/jpeg",
            "-w", "\n%{http_code}",
            *extra,
            stack.url(MEDIA_HOST, "/upload/multipart"),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.decode().rpartition("\n")
    return int(status), body


def test_browser_gets_an_html_block_page_via_curl(stack: Stack, tmp_path: Path) -> None:
    before = len(stack.upstream.upstream.requests())
    status, page = curl_upload(
        stack, tmp_path, stack.banned_jpeg, "-H", "Accept: text/html,application/xhtml+xml"
    )
    assert status == 403
    assert "blocked by the school network" in page
    assert "<html" in page
    assert len(stack.upstream.upstream.requests()) == before


def test_classifier_blocks_the_red_square(stack: Stack) -> None:
    red = encode(pattern_image((96, 96)), "PNG")
    with stack.client() as client:
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/red.png"), content=red)
    assert response.status_code == 403
    assert received_sha256(stack, "/upload/raw/red.png") == []
    record = stack.proxy.audit_records()[-1]
    assert record["decision"] == "block"
    assert any(PATTERN_LABEL in s["flagged"] for s in record["scores"])


def test_non_catalogued_host_is_passed_through_undecrypted(stack: Stack) -> None:
    port = stack.upstream.upstream.port
    passed = tunnel_peer_certificate(stack.proxy.port, OTHER_HOST, port, stack.upstream_ca)
    assert issuer_common_name(passed) == UPSTREAM_CA_NAME  # the upstream's own certificate
    intercepted = tunnel_peer_certificate(stack.proxy.port, MEDIA_HOST, port, stack.proxy.ca_pem)
    assert issuer_common_name(intercepted) != UPSTREAM_CA_NAME  # schoolgate's CA
    # A "banned" upload to a host outside the catalog is not schoolgate's business.
    with stack.client() as client:
        response = client.post(
            stack.url(OTHER_HOST, "/upload/multipart"), content=stack.banned_jpeg
        )
    assert response.status_code == 200
    assert hashlib.sha256(stack.banned_jpeg).hexdigest() in received_sha256(stack, "/upload")


def test_not_inspectable_app_is_refused_by_sni(stack: Stack) -> None:
    port = stack.upstream.upstream.port
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tunnel_peer_certificate(stack.proxy.port, BLOCKED_HOST, port, stack.upstream_ca)
    assert stack.upstream.upstream.requests("/") == [] or all(
        r.host.split(":")[0] != BLOCKED_HOST for r in stack.upstream.upstream.requests()
    )
    record = stack.proxy.audit_records()[-1]
    assert record["client"]["host"] == BLOCKED_HOST
    assert record["client"]["app"] == "teste2e"
    # The audit says what happened to the connection, not the group's fail policy (allow).
    assert record["decision"] == "block"


def test_monitor_group_is_recorded_not_blocked(stack: Stack, tmp_path: Path) -> None:
    # curl connects from 127.0.0.2, which the test config puts in a monitor-mode group.
    before = len(stack.upstream.upstream.requests("/upload/multipart"))
    status, _ = curl_upload(stack, tmp_path, stack.banned_jpeg, "--interface", "127.0.0.2")
    assert status == 200
    arrived = stack.upstream.upstream.requests("/upload/multipart")[before:]
    assert len(arrived) == 1
    assert arrived[0].length > len(stack.banned_jpeg)  # the whole multipart body went through
    record = stack.proxy.audit_records()[-1]
    assert record["client"]["client_ip"] == "127.0.0.2"
    assert record["group"] == "monitored"
    assert record["decision"] == "allow"
    assert record["would_block"] is True
    assert record["matches"]


def test_bad_input_follows_fail_policy_and_proxy_keeps_serving(
    stack: Stack, benign_photos: dict[str, Image.Image]
) -> None:
    good = encode(benign_photos["coffee"], "JPEG")
    truncated = good[: len(good) // 3]
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    with stack.client() as client:
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/cut.jpg"), content=truncated)
        assert response.status_code == 403  # refused media: fail closed by default
        response = client.put(
            stack.url(MEDIA_HOST, "/upload/raw/bomb.jpg"),
            content=bomb,
            headers={"Content-Encoding": "gzip"},
        )
        assert response.status_code == 403
        assert received_sha256(stack, "/upload/raw/cut.jpg") == []
        assert received_sha256(stack, "/upload/raw/bomb.jpg") == []
        response = client.put(stack.url(MEDIA_HOST, "/upload/raw/good.jpg"), content=good)
        assert response.status_code == 200
    assert hashlib.sha256(good).hexdigest() in received_sha256(stack, "/upload/raw/good.jpg")
    assert stack.proxy.process.poll() is None


def test_a_pinned_native_app_recovers_after_refusing_our_certificate(stack: Stack) -> None:
    # A pinned native app on its own address: it trusts only the real upstream CA, so it refuses
    # schoolgate's certificate. After 3 refusals (the default) that host passes through for that
    # TLS client (its JA4) on that device: the catalog says allow_and_log.
    port = stack.upstream.upstream.port
    pinned = "127.0.0.3"
    for _ in range(3):
        with pytest.raises(ssl.SSLCertVerificationError):
            tunnel_peer_certificate(stack.proxy.port, PINNED_HOST, port, stack.upstream_ca, pinned)
    cert = tunnel_peer_certificate(stack.proxy.port, PINNED_HOST, port, stack.upstream_ca, pinned)
    assert issuer_common_name(cert) == UPSTREAM_CA_NAME
    # Another TLS client on the same device (a browser: another ClientHello) is still intercepted.
    cert = tunnel_peer_certificate(
        stack.proxy.port, PINNED_HOST, port, stack.proxy.ca_pem, pinned, alpn=["h2", "http/1.1"]
    )
    assert issuer_common_name(cert) != UPSTREAM_CA_NAME
    # Other devices are still intercepted.
    cert = tunnel_peer_certificate(stack.proxy.port, PINNED_HOST, port, stack.proxy.ca_pem)
    assert issuer_common_name(cert) != UPSTREAM_CA_NAME
    details = [
        r["failure_detail"] or ""
        for r in stack.proxy.audit_records()
        if r["client"].get("client_ip") == pinned
    ]
    assert any(d.startswith("certificate pinned") for d in details)
    assert details[-1] == "not inspectable: passed through"  # later connections: logged, passed


def test_banked_download_from_catalogued_cdn_is_replaced(
    stack: Stack, benign_photos: dict[str, Image.Image]
) -> None:
    benign = encode(benign_photos["rocket"], "JPEG")
    stack.upstream.upstream.files["banned.jpg"] = stack.banned_jpeg
    stack.upstream.upstream.files["rocket.jpg"] = benign
    with stack.client() as client:
        blocked = client.get(stack.url(CDN_HOST, "/files/banned.jpg"))
        passed = client.get(stack.url(CDN_HOST, "/files/rocket.jpg"))
    assert blocked.status_code == 403
    assert stack.banned_jpeg not in blocked.content
    assert passed.status_code == 200
    assert passed.content == benign
    record = [r for r in stack.proxy.audit_records() if r["client"].get("direction") == "download"]
    assert [r["decision"] for r in record[-2:]] == ["block", "allow"]


def test_chunked_upload_is_judged_whole_and_final_chunk_held(stack: Stack) -> None:
    media = encode(stack.banned_photo, "JPEG", quality=80)
    third = len(media) // 3
    pieces = [
        (0, media[:third]),
        (third, media[third : 2 * third]),
        (2 * third, media[2 * third :]),
    ]
    path = "/upload/chunked/session-1"
    statuses = []
    with stack.client() as client:
        for offset, piece in pieces:
            last = offset + len(piece) - 1
            response = client.post(
                stack.url(MEDIA_HOST, path),
                content=piece,
                headers={"Content-Range": f"bytes {offset}-{last}/{len(media)}"},
            )
            statuses.append(response.status_code)
    assert statuses == [200, 200, 403]  # no chunk alone is the image; the final one is held
    arrived = [r.sha256 for r in stack.upstream.upstream.requests(path)]
    assert hashlib.sha256(pieces[2][1]).hexdigest() not in arrived
    assert len(arrived) == 2
    record = stack.proxy.audit_records()[-1]
    assert record["decision"] == "block"
    assert record["hashes"]["sha256"] == hashlib.sha256(media).hexdigest()


def test_refused_handshakes_never_switch_off_a_full_app(stack: Stack) -> None:
    """A pupil's curl without the school CA, refusing three times, once made an `inspection:
    full` host pass uninspected for that device until restart (issue 17)."""
    port = stack.upstream.upstream.port
    pupil = "127.0.0.4"
    for _ in range(5):
        with pytest.raises(ssl.SSLCertVerificationError):
            tunnel_peer_certificate(stack.proxy.port, MEDIA_HOST, port, stack.upstream_ca, pupil)
    cert = tunnel_peer_certificate(stack.proxy.port, MEDIA_HOST, port, stack.proxy.ca_pem, pupil)
    assert issuer_common_name(cert) != UPSTREAM_CA_NAME  # still the school's certificate
