"""A hand-made client that tries adversarial pass a17's desync on the fast path, run inside the
pupil's namespace: `python -m tests.support.desync_client ADDRESS REAL FAKE FOOLING`.

The kernel opens an ordinary connection to ADDRESS:443; one extra segment at the stream's first
sequence number carries a whole ClientHello for FAKE, made so that the server's TCP drops it
(FOOLING: `md5`, a TCP MD5 option the server has no key for; `paws`, a timestamp from the past)
while a filter on the way may read it; or, for `old`, one that ends where the stream starts (the
server drops it as a duplicate, and acknowledges up to its end: adversarial pass a19 Z1), and for
`syn` the same after a made-up SYN claiming that start (a19 Z1b). Then the kernel's own TLS
handshake for REAL follows at the stream's start, and a GET. Prints `RESULT` and the status
line, or `RESULT ERROR`.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from tests.support.rawtcp import capture, client_hello, print_get, segments, send


def handshake_numbers(tap: socket.socket, port: int) -> tuple[int, int, tuple[int, int]]:
    """(client ISN, server ISN, (client TSval, server TSval)) of the connection from `port`,
    read off the wire."""
    isn = server_isn = None
    stamps = (0, 0)
    for segment in segments(tap, 3):
        options = {k: v for k, v in segment.options if isinstance(k, str)}
        if segment.sport == port and segment.flags == "S":
            isn = segment.seq
            stamps = (options.get("Timestamp", (0, 0))[0], stamps[1])
        elif segment.dport == port and segment.flags == "SA":
            server_isn = segment.seq
            stamps = (stamps[0], options.get("Timestamp", (0, 0))[0])
        if isn is not None and server_isn is not None:
            break
    assert isn is not None, "no SYN seen"
    assert server_isn is not None, "no SYN-ACK seen"
    return isn, server_isn, stamps


def main(address: str, real: str, fake: str, fooling: str) -> None:
    tap = capture()
    conn = socket.create_connection((address, 443), timeout=10)
    source, port = conn.getsockname()
    isn, server_isn, (tsval, server_tsval) = handshake_numbers(tap, port)
    tap.close()
    fake_hello = client_hello(fake)
    seq = isn + 1
    options: list[tuple[object, object]] = [("Timestamp", (tsval + 50, server_tsval))]
    if fooling == "md5":
        options = [("NOP", None), ("NOP", None), (19, os.urandom(16)), *options]
    elif fooling == "paws":
        options = [("Timestamp", ((tsval - 2**30) % 2**32, server_tsval))]
    elif fooling in ("old", "syn"):
        seq = (isn + 1 - len(fake_hello)) % 2**32
    if fooling == "syn":  # an MSS option only: not a bare SYN of a common stack, so it is read
        made_up = IP(src=source, dst=address) / TCP(
            sport=port, dport=443, flags="S", seq=(seq - 1) % 2**32, window=64240,
            options=[("MSS", 1460)],
        )  # fmt: skip
        send(made_up, address)
        time.sleep(0.2)
    segment = IP(src=source, dst=address) / TCP(
        sport=port, dport=443, flags="PA", seq=seq, ack=server_isn + 1, window=502,
        options=options,
    ) / Raw(fake_hello)  # fmt: skip
    send(segment, address)
    time.sleep(0.3)
    print_get(lambda: conn, real)


if __name__ == "__main__":
    main(*sys.argv[1:5])
