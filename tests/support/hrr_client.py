"""A hand-made TLS 1.3 client that tries adversarial pass a25's HelloRetryRequest name switch,
run inside the pupil's namespace: `python -m tests.support.hrr_client ADDRESS FIRST SECOND
[split|together]`.

An ordinary kernel socket (no raw packets). The first ClientHello names FIRST and offers x25519
without a key share, so a TLS 1.3 server answers with a HelloRetryRequest; the second names
SECOND, with the share. A server that does not compare the two hellos (OpenSSL 3.0) completes the
handshake for SECOND. Then one GET. Prints `RESULT` and the status line, or `RESULT ERROR`.
`split` sends the second hello in two records with a ChangeCipherSpec record between them,
which OpenSSL skips (adversarial pass a34); `together` sends both hellos in one record.
TLS_AES_128_GCM_SHA256 only; the server's certificate is not checked (the test's own).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _expand(secret: bytes, label: bytes, context: bytes, size: int) -> bytes:
    full = b"tls13 " + label
    info = struct.pack("!H", size) + bytes([len(full)]) + full + bytes([len(context)]) + context
    out, block, counter = b"", b"", 1
    while len(out) < size:
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:size]


def _extract(salt: bytes, key: bytes) -> bytes:
    return hmac.new(salt, key, hashlib.sha256).digest()


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


class Hello:
    def __init__(self) -> None:
        self.random, self.session = os.urandom(32), os.urandom(32)

    def make(self, name: str, share: bytes, cookie: bytes | None = None) -> bytes:
        encoded = name.encode()
        extensions = _ext(0, struct.pack("!HBH", len(encoded) + 3, 0, len(encoded)) + encoded)
        extensions += _ext(10, b"\x00\x02\x00\x1d") + _ext(13, b"\x00\x04\x04\x03\x08\x04")
        extensions += _ext(43, b"\x02\x03\x04") + _ext(45, b"\x01\x01")
        extensions += _ext(51, struct.pack("!H", len(share)) + share)
        if cookie is not None:
            extensions += _ext(44, cookie)
        body = (b"\x03\x03" + self.random + b"\x20" + self.session + b"\x00\x02\x13\x01\x01\x00"
                + struct.pack("!H", len(extensions)) + extensions)  # fmt: skip
        return b"\x01" + struct.pack("!I", len(body))[1:] + body


class Records:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def read(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 5:
                size = struct.unpack("!H", self.buffer[3:5])[0]
                if len(self.buffer) >= 5 + size:
                    record, self.buffer = self.buffer[: 5 + size], self.buffer[5 + size :]
                    return record[0], record[5:]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the other side")
            self.buffer += data


def _extensions(message: bytes) -> dict[int, bytes]:
    at = 4 + 2 + 32
    at += 1 + message[at] + 3
    end = at + 2 + struct.unpack("!H", message[at : at + 2])[0]
    at += 2
    found = {}
    while at < end:
        kind, size = struct.unpack("!HH", message[at : at + 4])
        found[kind] = message[at + 4 : at + 4 + size]
        at += 4 + size
    return found


def _record(kind: int, data: bytes) -> bytes:
    return bytes([kind]) + b"\x03\x03" + struct.pack("!H", len(data)) + data


class Direction:
    def __init__(self, secret: bytes) -> None:
        self.key, self.iv = _expand(secret, b"key", b"", 16), _expand(secret, b"iv", b"", 12)
        self.count = 0

    def _nonce(self) -> bytes:
        nonce = bytes(a ^ b for a, b in zip(self.iv, self.count.to_bytes(12, "big"), strict=True))
        self.count += 1
        return nonce

    def open(self, kind: int, data: bytes) -> bytes:
        header = bytes([kind]) + b"\x03\x03" + struct.pack("!H", len(data))
        return AESGCM(self.key).decrypt(self._nonce(), data, header).rstrip(b"\0")

    def seal(self, inner: bytes) -> bytes:
        header = b"\x17\x03\x03" + struct.pack("!H", len(inner) + 16)
        return header + AESGCM(self.key).encrypt(self._nonce(), inner, header)


def switch(address: str, first: str, second: str, how: str = "") -> str:
    sock = socket.create_connection((address, 443), timeout=10)
    records, hello = Records(sock), Hello()
    first_hello = hello.make(first, b"")
    key = X25519PrivateKey.generate()
    share = struct.pack("!HH", 0x1D, 32) + key.public_key().public_bytes_raw()
    if how == "together":  # both hellos in one record, before the retry request
        second_hello = hello.make(second, share)
        sock.sendall(_record(22, first_hello + second_hello))
    else:
        sock.sendall(_record(22, first_hello))
    kind, retry = records.read()
    if kind != 22 or retry[6:38] != HRR_RANDOM:
        return f"no HelloRetryRequest (record {kind})"
    if how != "together":
        second_hello = hello.make(second, share, _extensions(retry).get(44))
    if how == "split":
        sock.sendall(_record(20, b"\x01") + _record(22, second_hello[:40]) + _record(20, b"\x01")
                     + _record(22, second_hello[40:]))  # fmt: skip
    elif how != "together":
        sock.sendall(_record(20, b"\x01") + _record(22, second_hello))
    transcript = b"\xfe\x00\x00\x20" + _sha(first_hello) + retry + second_hello
    while (answer := records.read())[0] != 22:
        pass
    server_hello = answer[1]
    transcript += server_hello
    server_share = _extensions(server_hello)[51][4:]
    shared = key.exchange(X25519PublicKey.from_public_bytes(server_share))
    early = _extract(b"\0" * 32, b"\0" * 32)
    handshake = _extract(_expand(early, b"derived", _sha(b""), 32), shared)
    client_hs = _expand(handshake, b"c hs traffic", _sha(transcript), 32)
    server_hs = _expand(handshake, b"s hs traffic", _sha(transcript), 32)
    reading, pending = Direction(server_hs), b""
    while True:
        kind, data = records.read()
        if kind == 20:
            continue
        plain = reading.open(kind, data)
        pending += plain[:-1]
        finished = False
        while len(pending) >= 4:
            size = int.from_bytes(pending[1:4], "big")
            if len(pending) < 4 + size:
                break
            message, pending = pending[: 4 + size], pending[4 + size :]
            if message[0] == 20:
                transcript += message
                finished = True
                break
            transcript += message
        if finished:
            break
    master = _extract(_expand(handshake, b"derived", _sha(b""), 32), b"\0" * 32)
    client_app = _expand(master, b"c ap traffic", _sha(transcript), 32)
    server_app = _expand(master, b"s ap traffic", _sha(transcript), 32)
    verify = hmac.new(_expand(client_hs, b"finished", b"", 32), _sha(transcript), hashlib.sha256)
    sock.sendall(Direction(client_hs).seal(b"\x14\x00\x00\x20" + verify.digest() + b"\x16"))
    request = f"GET / HTTP/1.1\r\nHost: {second}\r\nConnection: close\r\n\r\n".encode()
    sock.sendall(Direction(client_app).seal(request + b"\x17"))
    incoming = Direction(server_app)
    while True:
        kind, data = records.read()
        plain = incoming.open(kind, data)
        if plain[-1] == 23:
            return plain[:-1].split(b"\r\n")[0].decode(errors="replace")


def main(address: str, first: str, second: str, *how: str) -> None:
    try:
        print("RESULT", switch(address, first, second, *how))
    except (OSError, ConnectionError, KeyError, ValueError) as error:
        print("RESULT ERROR", type(error).__name__, error)


if __name__ == "__main__":
    main(*sys.argv[1:])
