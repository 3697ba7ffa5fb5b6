"""Held downloads are capped as they arrive: a catalogued CDN that answers with a chunked body
(no Content-Length) far over the hold cap cannot make the proxy buffer it. Past the cap the
download fail policy decides: allow streams the whole body through unbuffered, block answers
with the block page and cuts the upstream off. Benign images only."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import encode
from tests.support.hostile_stack import (
    HostileStack,
    RssSampler,
    build_stack,
    raw_exchange,
    statuses,
    stop_stack,
    zero_pieces,
)
from tests.support.proxy_harness import CDN_HOST, client_ssl_context
from tests.support.stack import needs_private_hosts

pytestmark = [pytest.mark.slow, needs_private_hosts]

STRICT_CLIENT = "127.0.0.3"  # in a group whose download fail policy is block
GROUPS: list[dict[str, Any]] = [
    {"name": "monitored", "subnets": ["127.0.0.2/32"], "mode": "monitor"},
    {
        "name": "strict-downloads",
        "subnets": [f"{STRICT_CLIENT}/32"],
        "mode": "block",
        "downloads": {"fail": "block"},
    },
    {"name": "pupils", "subnets": ["0.0.0.0/0", "::/0"], "mode": "block"},
]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[HostileStack]:
    running = build_stack(
        tmp_path_factory.mktemp("download-cap"),
        benign_photos["chelsea"],
        benign_photos["astronaut"],
        groups=GROUPS,
    )
    try:
        yield running
    finally:
        stop_stack(running)


def client(stack: HostileStack) -> httpx.Client:
    context = client_ssl_context(stack.proxy.ca_pem, stack.upstream_ca)
    return httpx.Client(proxy=stack.proxy.url, verify=context, timeout=60)


def big_image(
    photo: bytes, total: int, pulled: list[int] | None = None
) -> Callable[[], Iterator[bytes]]:
    """A JPEG followed by zero padding, `total` bytes in all, generated lazily each time;
    `pulled` (one counter) counts the bytes the upstream took to send."""

    def pieces() -> Iterator[bytes]:
        for piece in itertools.chain([photo], zero_pieces(total - len(photo))):
            if pulled is not None:
                pulled[0] += len(piece)
            yield piece

    return pieces


def sha256_of(pieces: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def download_oversize(stack: HostileStack) -> list[dict[str, Any]]:
    return [
        r
        for r in stack.decisions()
        if r["client"].get("direction") == "download" and r.get("failure") == "oversize"
    ]


def test_chunked_download_over_the_cap_is_streamed_whole_without_buffering(
    stack: HostileStack,
) -> None:
    photo = encode(stack.benign_photo, "JPEG", quality=80)
    total = 16 * stack.cap + 12345
    make = big_image(photo, total)
    stack.upstream.upstream.streams["huge.jpg"] = make
    stack.upstream.upstream.files["small.jpg"] = photo
    before = len(download_oversize(stack))
    with client(stack) as http:
        warm = http.get(stack.url("/files/small.jpg", host=CDN_HOST))  # settles the baseline
        assert warm.status_code == 200
        assert warm.content == photo
        rss_before = stack.rss_bytes()
        digest = hashlib.sha256()
        received = 0
        url = stack.url("/stream/huge.jpg", host=CDN_HOST)
        with RssSampler(stack) as sampler, http.stream("GET", url) as response:
            assert response.status_code == 200
            for piece in response.iter_raw(256 * 1024):
                digest.update(piece)
                received += len(piece)
    assert received == total
    assert digest.hexdigest() == sha256_of(make())
    # Never more than about the cap was held: buffering the body would grow by its whole size.
    assert sampler.peak - rss_before < 8 * stack.cap, (sampler.peak - rss_before, total)
    records = download_oversize(stack)[before:]
    assert len(records) == 1
    assert records[0]["decision"] == "allow"
    assert "at least" in str(records[0]["failure_detail"])
    stack.assert_serving()


def test_chunked_download_over_the_cap_gets_the_block_page_where_policy_blocks(
    stack: HostileStack,
) -> None:
    photo = encode(stack.benign_photo, "JPEG", quality=80)
    total = 16 * stack.cap
    pulled = [0]
    stack.upstream.upstream.streams["strict.jpg"] = big_image(photo, total, pulled)
    before = len(download_oversize(stack))
    request = (
        f"GET /stream/strict.jpg HTTP/1.1\r\nHost: {stack.host_header(CDN_HOST)}\r\n"
        "Accept: image/*\r\n\r\n"
    ).encode()
    with stack.tls_socket(host=CDN_HOST, source=STRICT_CLIENT) as sock:
        reply = raw_exchange(sock, request)
    # The whole block page, in place of the download (the upstream was cut off, not read on).
    assert statuses(reply) == [403], reply[:300]
    assert photo not in reply
    assert pulled[0] < total // 2, pulled  # buffering it whole would have read all of it
    records = download_oversize(stack)[before:]
    assert len(records) == 1
    assert records[0]["decision"] == "block"
    assert records[0]["group"] == "strict-downloads"
    stack.assert_serving()


def test_small_chunked_banked_download_is_still_replaced(stack: HostileStack) -> None:
    banked = encode(stack.banned_photo, "JPEG", quality=90)
    stack.upstream.upstream.streams["banked.jpg"] = lambda: iter([banked[:1000], banked[1000:]])
    with client(stack) as http:
        response = http.get(stack.url("/stream/banked.jpg", host=CDN_HOST))
    assert response.status_code == 403
    assert banked not in response.content


def test_declared_length_over_the_cap_is_streamed_where_policy_allows(stack: HostileStack) -> None:
    photo = encode(stack.benign_photo, "JPEG", quality=80)
    large = photo + b"\0" * (2 * stack.cap)
    stack.upstream.upstream.files["declared.jpg"] = large
    before = len(download_oversize(stack))
    with client(stack) as http:
        response = http.get(stack.url("/files/declared.jpg", host=CDN_HOST))
    assert response.status_code == 200
    assert response.content == large
    records = download_oversize(stack)[before:]
    assert [r["decision"] for r in records] == ["allow"]
    assert f"download of {len(large)} bytes" in str(records[0]["failure_detail"])
