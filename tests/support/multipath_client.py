"""A hand-made multipath TCP client that tries adversarial pass a24's data-sequence split on the
fast path, run inside the pupil's namespace: `python -m tests.support.multipath_client ADDRESS
REAL FAKE`.

One subflow, every segment built by hand (MPTCP v1, no checksums). The subflow's stream is a
harmless ClientHello for FAKE, mapped by a DSS option to a data-level sequence number inside
the range the real stream covers, then the real TLS handshake for REAL, mapped from the start.
A filter that reads the subflow's bytes reads FAKE's hello and sees the server acknowledge it;
a multipath server's application reads REAL's stream only. Then a GET. Prints `RESULT` and the
status line, or `RESULT ERROR` and what failed. The kernel's own resets for the local port are
dropped meanwhile (the laptop's firewall, as a pupil with root sets it).
"""

from __future__ import annotations

import hashlib
import os
import random
import ssl
import struct
import subprocess
import sys
import time

from scapy.layers.inet import IP, TCP

from tests.support.rawtcp import any_certificate, capture, client_hello, send

OFFSET = 100  # where, in the real stream's data-level range, the harmless hello is mapped


def _capable(*keys: bytes) -> bytes:
    """MP_CAPABLE (v1, HMAC-SHA256), with the keys known so far."""
    return bytes([30, 4 + 8 * len(keys), 0x01, 0x01]) + b"".join(keys)


def _dss(data_ack: int, dsn: int | None = None, ssn: int = 0, length: int = 0) -> bytes:
    if dsn is None:
        return bytes([30, 12, 0x20, 0x03]) + struct.pack(">Q", data_ack % 2**64)
    return bytes([30, 26, 0x20, 0x0F]) + struct.pack(
        ">QQIH", data_ack % 2**64, dsn % 2**64, ssn, length
    )


def _idsn(key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(key).digest()[24:], "big")


class Subflow:
    def __init__(self, address: str) -> None:
        self.address = address
        self.port = random.randint(40000, 60000)
        self.tap = capture()
        self.tap.settimeout(0.05)
        self.rule = f"tcp sport {self.port} tcp flags & rst == rst drop"
        for command in ("add table inet mpclient",
                        "add chain inet mpclient out { type filter hook output priority 0; }",
                        f"add rule inet mpclient out {self.rule}"):  # fmt: skip
            subprocess.run(["nft", command], check=True, timeout=10)

    def close(self) -> None:
        subprocess.run(["nft", "delete table inet mpclient"], check=False, timeout=10)
        self.tap.close()

    def send(self, flags: str, seq: int, ack: int, options: bytes, data: bytes = b"") -> None:
        options += b"\x01" * (-len(options) % 4)
        header = bytes(TCP(sport=self.port, dport=443, flags=flags, seq=seq % 2**32,
                           ack=ack % 2**32, window=65535))[:20]  # fmt: skip
        header = header[:12] + bytes([(5 + len(options) // 4) << 4]) + header[13:]
        segment = IP(dst=self.address) / TCP(header + options + data)
        del segment[TCP].chksum
        send(segment, self.address)

    def received(self, seconds: float) -> list[TCP]:
        """The server's segments for our port over `seconds`."""
        found = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame = self.tap.recv(65535)
            except TimeoutError:
                continue
            if frame[12:14] == b"\x08\x00" and TCP in (packet := IP(frame[14:])):
                segment = packet[TCP]
                if segment.sport == 443 and segment.dport == self.port:
                    found.append(segment)
        return found


def main(address: str, real: str, fake: str) -> None:
    flow = Subflow(address)
    try:
        print("RESULT", _split(flow, real, fake))
    except (OSError, ssl.SSLError, ConnectionError) as error:
        print("RESULT ERROR", type(error).__name__, error)
    finally:
        flow.close()


def _split(flow: Subflow, real: str, fake: str) -> str:
    start, key = random.randint(1 << 20, 1 << 31), os.urandom(8)
    flow.send("S", start, 0, b"\x02\x04\x05\xb4" + _capable())
    answers = [s for s in flow.received(2) if s.flags == "SA"]
    if not answers:
        raise ConnectionError("no SYN-ACK")
    options = bytes(answers[0])[20 : answers[0].dataofs * 4]
    at = options.find(b"\x1e\x0c")
    # Without the server's key (no multipath), carry on all the same: the DSS options still
    # reach a filter, and a server that ignores them reads the harmless hello first.
    server_key = options[at + 4 : at + 12] if at >= 0 else bytes(8)
    rcv, snd = answers[0].seq + 1, start + 1
    ours, theirs = _idsn(key), _idsn(server_key)
    data_ack = theirs + 1
    flow.send("A", snd, rcv, _capable(key, server_key))
    time.sleep(0.2)
    harmless = client_hello(fake)
    flow.send("PA", snd, rcv, _dss(data_ack, ours + 1 + OFFSET, 1, len(harmless)), harmless)
    snd += len(harmless)
    time.sleep(0.3)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = any_certificate().wrap_bio(incoming, outgoing, server_hostname=real)
    dsn, ssn = ours + 1, 1 + len(harmless)

    def push(data: bytes) -> None:
        nonlocal snd, dsn, ssn
        for at in range(0, len(data), 1200):
            chunk = data[at : at + 1200]
            flow.send("PA", snd, rcv, _dss(data_ack, dsn, ssn, len(chunk)), chunk)
            snd, dsn, ssn = snd + len(chunk), dsn + len(chunk), ssn + len(chunk)

    def pull() -> bytes:
        nonlocal rcv, data_ack
        got = b""
        for segment in flow.received(1.0):
            if "R" in str(segment.flags):
                raise ConnectionError("reset")
            payload = bytes(segment.payload)
            if payload and segment.seq == rcv % 2**32:
                got, rcv, data_ack = got + payload, rcv + len(payload), data_ack + len(payload)
        if got:
            flow.send("A", snd, rcv, _dss(data_ack))
        return got

    for _ in range(10):
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            push(outgoing.read())
            incoming.write(pull())
    else:
        raise ConnectionError("no TLS handshake")
    tls.write(f"GET / HTTP/1.1\r\nHost: {real}\r\nConnection: close\r\n\r\n".encode())
    push(outgoing.read())
    reply = b""
    for _ in range(5):
        incoming.write(pull())
        try:
            reply += tls.read(4096)
        except ssl.SSLWantReadError:
            continue
        if b"\r\n" in reply:
            break
    return reply.split(b"\r\n")[0].decode(errors="replace") or "no reply"


if __name__ == "__main__":
    main(*sys.argv[1:4])
