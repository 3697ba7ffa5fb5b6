"""Issue 16, memory: one device's held bodies cannot push other pupils into `overload`, and
hostile JSON cannot blow the service's memory or stall its event loop.

The stack holds at most 4 MiB per body, 4 MiB per device and 8 MiB in all, so a device that
keeps one body almost at the cap has no room for another, while a second device still has.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.conftest import encode
from tests.support.hostile_stack import HOLD_CAP, HostileStack, build_stack, stop_stack
from tests.support.stack import needs_private_hosts

pytestmark = [pytest.mark.slow, needs_private_hosts]

OTHER_DEVICE = "127.0.0.3"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, benign_photos: dict[str, Image.Image]
) -> Iterator[HostileStack]:
    running = build_stack(
        tmp_path_factory.mktemp("memory"),
        benign_photos["chelsea"],
        benign_photos["astronaut"],
        proxy_extra={"max_held_device_bytes": HOLD_CAP, "max_held_total_bytes": 2 * HOLD_CAP},
    )
    try:
        yield running
    finally:
        stop_stack(running)


def stalled_upload(stack: HostileStack, declared: int, sent: int) -> ssl.SSLSocket:
    """An upload that sends `sent` of its `declared` bytes and then waits: held, unfinished."""
    sock = stack.tls_socket()
    head = (
        f"PUT /upload/raw/stalled.bin HTTP/1.1\r\nHost: {stack.host_header()}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + b"\x00" * sent)
    return sock


def put_from(stack: HostileStack, source: str, path: str, body: bytes) -> int:
    sock = stack.tls_socket(source=source)
    try:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {stack.host_header()}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        reply = b""
        deadline = time.monotonic() + 30
        while b"\r\n" not in reply and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else 0
    finally:
        sock.close()


def wait_for(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)


def test_one_device_cannot_push_another_into_overload(stack: HostileStack) -> None:
    photo = encode(stack.benign_photo, "JPEG", quality=85)
    held = HOLD_CAP - 64 * 1024
    stalled = stalled_upload(stack, HOLD_CAP - 1024, held)
    try:
        time.sleep(1.0)  # the proxy has buffered what was sent
        # The same device has no room for a second body: overload, blocked for students.
        assert (
            put_from(stack, "127.0.0.1", "/upload/raw/second.jpg", photo + bytes(512 * 1024)) == 403
        )
        records = [r for r in stack.decisions() if r.get("failure") == "overload"]
        assert records
        assert "memory budget" in str(records[-1]["failure_detail"])
        # Another device still has its share: its upload is judged and delivered.
        assert put_from(stack, OTHER_DEVICE, "/upload/raw/other.jpg", photo) == 200
        assert stack.arrived("/upload/raw/other.jpg") == [hashlib.sha256(photo).hexdigest()]
    finally:
        stalled.close()
    # The stalled body's bytes are given back when its client goes away.
    wait_for(lambda: put_from(stack, "127.0.0.1", "/upload/raw/after.jpg", photo) == 200)
    assert stack.arrived("/upload/raw/after.jpg") == [hashlib.sha256(photo).hexdigest()]


def test_hostile_json_neither_blows_memory_nor_stalls_other_traffic(stack: HostileStack) -> None:
    """4 MiB of nested empty arrays once cost about 290 MiB and 1.3 s on the event loop each."""
    nested = b"[" + b"[]," * ((HOLD_CAP - 4096) // 3) + b"[]]"
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    rss_before = stack.rss_bytes()
    codes: list[int] = []

    def send_all() -> None:
        # One after another: each is near the cap, and this device's share is one body.
        with stack.client() as client:
            for body in (nested, deep, nested, deep):
                response = client.post(
                    stack.url("/upload/json"),
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                codes.append(response.status_code)

    sender = threading.Thread(target=send_all)
    sender.start()
    # Meanwhile small requests from another pupil are answered promptly.
    slowest = 0.0
    with stack.client() as client:
        while sender.is_alive() and len(codes) < 4:
            started = time.monotonic()
            small = client.post(stack.url("/api/ping"), content=json.dumps({"ping": 1}).encode())
            slowest = max(slowest, time.monotonic() - started)
            assert small.status_code == 200
            time.sleep(0.05)
    sender.join(timeout=120)
    assert codes == [200, 200, 200, 200]  # no media in them: delivered
    assert slowest < 2
    assert stack.rss_bytes() - rss_before < 8 * HOLD_CAP
    stack.assert_serving()
