"""A hand-made client that tries adversarial pass a18's reopen on the fast path, run inside the
pupil's namespace: `python -m tests.support.reopen_client ADDRESS REAL HARMLESS MODE`.

1. An ordinary connection from a fixed local port completes a TLS handshake naming HARMLESS (so
   the gateway verifies it), then ends: MODE `fin` after a GET (the server closes first),
   `reset` with a reset, `ack` with a reset followed by one bare ACK that makes the server
   answer with its own reset (conntrack then took the next SYN for the old connection: Y1c).
2. A new connection from the same port to the same server names REAL and sends a GET.
Prints `RESULT` and the status line of the second request, or `RESULT ERROR`.

MODE `synfin` (a23 H6) keeps the verified connection open and sends, on its ports, a SYN+FIN
carrying the first 200 bytes of a hello naming REAL; prints `RESULT PORT` and the local port.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
import time

from scapy.layers.inet import IP, TCP

from tests.support.rawtcp import (
    any_certificate,
    capture,
    client_hello,
    next_sequences,
    print_get,
    send,
)


def _connect(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(10)
    sock.connect((address, 443))
    return sock


def main(address: str, real: str, harmless: str, mode: str) -> None:
    port = random.randint(40000, 60000)
    tap = capture()
    first = any_certificate().wrap_socket(_connect(address, port), server_hostname=harmless)
    time.sleep(0.3)
    if mode == "synfin":
        first.sendall(f"GET / HTTP/1.1\r\nHost: {harmless}\r\n\r\n".encode())
        first.recv(4096)
        start = random.randint(1 << 20, 1 << 31)
        odd = IP(dst=address) / TCP(sport=port, dport=443, flags="SF", seq=start)
        odd /= client_hello(real)[:200]
        send(odd, address)
        time.sleep(0.3)
        print("RESULT PORT", port)
        first.close()
        return
    if mode == "fin":
        first.sendall(f"GET / HTTP/1.1\r\nHost: {harmless}\r\nConnection: close\r\n\r\n".encode())
        while first.recv(65536):
            pass
        first.close()
    else:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # a reset
        if mode == "ack":
            client_seq, server_seq = next_sequences(tap, port)
            segment = IP(dst=address) / TCP(sport=port, dport=443, flags="A", seq=client_seq,
                                            ack=server_seq, window=502)  # fmt: skip
            send(segment, address)
    tap.close()
    time.sleep(0.3)
    print_get(lambda: _connect(address, port), real)


if __name__ == "__main__":
    main(*sys.argv[1:5])
