"""Hostile input through the real proxy: every case ends in a clear logged reason or a policy
decision, nothing reaches the upstream that should not, and the proxy keeps serving others (each
test checks that a benign upload succeeds right after). Benign images only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from tests.hostile_stack import (
    HostileStack,
    build_stack,
    chunked,
    statuses,
    stop_stack,
    stream_body,
    zero_pieces,
)
from tests.proxy_harness import can_isolate_hosts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not can_isolate_hosts(),
        reason="needs root and unshare(1) to give the proxy a private /etc/hosts",
    ),
]

TWO_GB = 2 * 1024**3


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[HostileStack]:
    running = build_stack(
        tmp_path_factory.mktemp("hostile"), benign_photos["chelsea"], benign_photos["astronaut"]
    )
    try:
        yield running
    finally:
        stop_stack(running)


def last_decision(stack: HostileStack, route: str) -> dict[str, object]:
    records = [r for r in stack.decisions() if r["client"].get("route") == route]
    assert records, f"no decision recorded for {route}"
    return records[-1]


def decisions_for(stack: HostileStack, failure: str) -> list[dict[str, object]]:
    return [r for r in stack.decisions() if r.get("failure") == failure]


# --- Oversize bodies: refused as they arrive, never buffered ------------------------------------


def upload_head(stack: HostileStack, method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {stack.host_header()}", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_two_gigabyte_upload_ends_in_oversize_policy_quickly(
    stack: HostileStack, framing: str
) -> None:
    path = f"/upload/raw/huge-{framing}.bin"
    path_route = "/upload/raw/*"
    before = len(decisions_for(stack, "oversize"))
    rss_before = stack.rss_bytes()
    if framing == "chunked":
        head = upload_head(stack, "PUT", path, "Transfer-Encoding: chunked")
        pieces = chunked(zero_pieces(TWO_GB))
    else:
        head = upload_head(stack, "PUT", path, f"Content-Length: {TWO_GB}")
        pieces = zero_pieces(TWO_GB)
    with stack.tls_socket() as sock:
        outcome = stream_body(sock, head, pieces, time_limit=60)
    # The proxy stopped the client long before 2 GB: within the cap plus socket buffers.
    assert not outcome.finished
    assert outcome.sent < 16 * stack.cap, outcome
    assert outcome.seconds < 30, outcome
    if outcome.reply:  # the block page, unless the reset overtook it
        assert statuses(outcome.reply)[-1] == 403, outcome.reply[:200]
    assert stack.arrived(path) == []
    oversize = decisions_for(stack, "oversize")[before:]
    assert len(oversize) == 1
    assert oversize[0]["decision"] == "block"
    assert oversize[0]["client"]["route"] == path_route
    assert "over the" in str(oversize[0]["failure_detail"])
    # Nothing near the body's size was ever held.
    assert stack.rss_bytes() - rss_before < 8 * stack.cap
    stack.assert_serving()
