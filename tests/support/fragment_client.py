"""A hand-made client that tries adversarial pass a20's D1 on the fast path, run inside the
pupil's namespace: `python -m tests.support.fragment_client ADDRESS NAME COUNT`.

An ordinary connection (the kernel's handshake, nothing sent), then COUNT copies of a ~5 KB
first-flight segment, each sent as IPv4 fragments: the gateway reassembles them for conntrack
into one packet longer than the queue copies. Prints `RESULT sent N`.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import sys
import time

from scapy.layers.inet import IP, TCP, fragment
from scapy.packet import Raw

from tests.support.rawtcp import any_certificate, capture, next_sequences, send


def big_hello(name: str) -> bytes:
    """A ClientHello of about 5.6 KB (a long ALPN list, as a20 made)."""
    context = any_certificate()
    context.set_alpn_protocols(["http/1.1"] + ["a" * 255] * 21)
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def main(address: str, name: str, count: int) -> None:
    port = random.randint(40000, 60000)
    tap = capture()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(10)
    sock.connect((address, 443))
    client_seq, server_seq = next_sequences(tap, port)
    tap.close()
    hello = big_hello(name)
    sent = 0
    for _ in range(min(count, 200)):
        segment = (
            IP(dst=address, id=random.randint(0, 65535))
            / TCP(sport=port, dport=443, flags="PA", seq=client_seq, ack=server_seq, window=502)
            / Raw(hello)
        )
        for piece in fragment(segment, fragsize=1400):  # type: ignore[no-untyped-call]
            send(piece, address)
        sent += 1
    time.sleep(0.5)
    sock.close()
    print("RESULT sent", sent, len(hello))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
