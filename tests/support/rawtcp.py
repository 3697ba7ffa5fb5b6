"""What the hand-made fast-path clients share (tests/support/desync_client.py, reopen_client.py,
fragment_client.py):
a TLS client context that accepts any certificate (the proxy's or the test server's), the TCP
segments seen on the wire, and a raw packet sent as built."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator

from scapy.layers.inet import IP, TCP

ETH_P_ALL = 0x0003  # outgoing frames reach only "all protocols" taps


def any_certificate() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def client_hello(name: str) -> bytes:
    """The first bytes a TLS client sends for `name` (Python's ssl, no socket)."""
    outgoing = ssl.MemoryBIO()
    tls = any_certificate().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def capture() -> socket.socket:
    """A tap on every frame of this namespace, both ways."""
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))


def segments(tap: socket.socket, seconds: float) -> Iterator[TCP]:
    """The IPv4 TCP segments the tap sees for `seconds`."""
    deadline = time.monotonic() + seconds
    tap.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            frame = tap.recv(65535)
        except TimeoutError:
            continue
        if frame[12:14] == b"\x08\x00" and TCP in (packet := IP(frame[14:])):
            yield packet[TCP]


def print_get(connect: Callable[[], socket.socket], name: str) -> None:
    """TLS naming `name` over the socket `connect` gives, one GET, and the clients' output:
    `RESULT` and the status line, or `RESULT ERROR` and what failed."""
    try:
        tls = any_certificate().wrap_socket(connect(), server_hostname=name)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        print("RESULT", tls.recv(4096).split(b"\r\n")[0].decode(errors="replace"))
    except (OSError, ssl.SSLError) as error:
        print("RESULT ERROR", type(error).__name__)


def next_sequences(tap: socket.socket, port: int) -> tuple[int, int]:
    """(the client's next sequence number, the server's next) off the wire over one second,
    for the connection from local `port`."""
    client = server = 0
    for segment in segments(tap, 1):
        size = len(bytes(segment.payload)) + (1 if "S" in str(segment.flags) else 0)
        if segment.sport == port:
            client = segment.seq + size
        elif segment.dport == port:
            server = segment.seq + size + (1 if "F" in str(segment.flags) else 0)
    return client, server


def send(packet: IP, address: str) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        raw.sendto(bytes(packet), (address, 0))
