"""QUIC client Initial packets: derive the Initial keys, unprotect, decrypt, collect CRYPTO data.

Initial packets are encrypted with keys anyone can derive from the Destination Connection ID
(RFC 9001 section 5.2; RFC 9369 for QUIC v2), so a passive observer can read the ClientHello, and
with it the server name, of every QUIC connection. Hostile input raises `Malformed`; nothing here
allocates more than the datagram it is given.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from schoolgate.sniffer.tlshello import Bytes, Malformed

VERSION_1: Final = 0x00000001
VERSION_2: Final = 0x6B3343CF


@dataclass(frozen=True)
class VersionParams:
    salt: bytes
    label_prefix: bytes  # "quic " (v1) or "quicv2 " (v2) before key / iv / hp
    initial_type: int  # the long-header packet type bits of an Initial packet


VERSIONS: Final = {
    VERSION_1: VersionParams(
        bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), b"quic ", 0b00
    ),
    VERSION_2: VersionParams(
        bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), b"quicv2 ", 0b01
    ),
}
MAX_CID: Final = 20
MAX_CRYPTO_OFFSET: Final = 64 * 1024  # a ClientHello never reaches this far
FRAME_PADDING, FRAME_PING, FRAME_ACK, FRAME_ACK_ECN, FRAME_CRYPTO = 0x00, 0x01, 0x02, 0x03, 0x06
FRAME_CLOSE: Final = 0x1C


@dataclass(frozen=True)
class InitialKeys:
    key: bytes
    iv: bytes
    hp: bytes


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


@lru_cache(maxsize=1024)
def initial_keys(dcid: bytes, version: int = VERSION_1, server: bool = False) -> InitialKeys:
    """The client's (or server's) Initial packet protection keys for a Destination Connection ID."""
    params = VERSIONS[version]
    initial_secret = hmac.new(params.salt, dcid, sha256).digest()  # HKDF-Extract
    secret = _expand_label(initial_secret, b"server in" if server else b"client in", 32)
    return InitialKeys(
        key=_expand_label(secret, params.label_prefix + b"key", 16),
        iv=_expand_label(secret, params.label_prefix + b"iv", 12),
        hp=_expand_label(secret, params.label_prefix + b"hp", 16),
    )


def header_protection_mask(hp_key: bytes, sample: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    return encryptor.update(sample) + encryptor.finalize()


def read_varint(data: Bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer at `pos`: (value, next position)."""
    if pos >= len(data):
        raise Malformed("varint past the end")
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        raise Malformed("varint past the end")
    value = first & 0x3F
    for index in range(1, size):
        value = (value << 8) | data[pos + index]
    return value, pos + size


@dataclass(frozen=True)
class InitialPacket:
    version: int
    dcid: bytes
    scid: bytes
    packet_number: int
    payload: bytes  # decrypted frames


def is_long_header(datagram: Bytes) -> bool:
    return len(datagram) >= 7 and datagram[0] & 0xC0 == 0xC0


def decrypt_initial(datagram: Bytes) -> InitialPacket | None:
    """Decrypt the client Initial packet at the start of a UDP datagram.

    Returns None for QUIC packets that are not Initials of a version we know (0-RTT, Handshake,
    version negotiation, unknown versions). Raises Malformed for bytes that claim to be an Initial
    but do not parse or do not authenticate.
    """
    if not is_long_header(datagram):
        return None
    version = int.from_bytes(datagram[1:5], "big")
    params = VERSIONS.get(version)
    if params is None or (datagram[0] >> 4) & 0b11 != params.initial_type:
        return None
    pos = 5
    dcid_len = datagram[pos]
    if dcid_len > MAX_CID:
        raise Malformed(f"connection id of {dcid_len} bytes")
    dcid = bytes(datagram[pos + 1 : pos + 1 + dcid_len])
    pos += 1 + dcid_len
    if pos >= len(datagram) or len(dcid) != dcid_len:
        raise Malformed("header cut short")
    scid_len = datagram[pos]
    if scid_len > MAX_CID:
        raise Malformed(f"connection id of {scid_len} bytes")
    scid = bytes(datagram[pos + 1 : pos + 1 + scid_len])
    pos += 1 + scid_len
    token_len, pos = read_varint(datagram, pos)
    pos += token_len
    length, pn_offset = read_varint(datagram, pos)
    end = pn_offset + length
    if end > len(datagram) or length < 20:
        raise Malformed("packet length runs past the datagram")
    keys = initial_keys(dcid, version)
    sample = bytes(datagram[pn_offset + 4 : pn_offset + 20])
    mask = header_protection_mask(keys.hp, sample)
    first = datagram[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    protected_pn = datagram[pn_offset : pn_offset + pn_len]
    pn_bytes = bytes(b ^ m for b, m in zip(protected_pn, mask[1 : 1 + pn_len], strict=True))
    packet_number = int.from_bytes(pn_bytes, "big")
    header = bytes([first]) + bytes(datagram[1:pn_offset]) + pn_bytes
    nonce = (int.from_bytes(keys.iv, "big") ^ packet_number).to_bytes(12, "big")
    try:
        payload = AESGCM(keys.key).decrypt(nonce, bytes(datagram[pn_offset + pn_len : end]), header)
    except InvalidTag:
        raise Malformed("Initial packet does not authenticate") from None
    return InitialPacket(version, dcid, scid, packet_number, payload)


def crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """The (offset, data) of each CRYPTO frame in a decrypted Initial payload.

    Only frames allowed in a client Initial are accepted (RFC 9000 section 12.4).
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(payload):
        frame_type = payload[pos]
        pos += 1
        if frame_type in (FRAME_PADDING, FRAME_PING):
            continue
        if frame_type in (FRAME_ACK, FRAME_ACK_ECN):
            _, pos = read_varint(payload, pos)  # largest acknowledged
            _, pos = read_varint(payload, pos)  # delay
            ranges, pos = read_varint(payload, pos)
            _, pos = read_varint(payload, pos)  # first range
            if ranges > len(payload):
                raise Malformed("ACK frame claims more ranges than bytes")
            for _ in range(2 * ranges + (3 if frame_type == FRAME_ACK_ECN else 0)):
                _, pos = read_varint(payload, pos)
        elif frame_type == FRAME_CRYPTO:
            offset, pos = read_varint(payload, pos)
            length, pos = read_varint(payload, pos)
            if pos + length > len(payload) or offset + length > MAX_CRYPTO_OFFSET:
                raise Malformed("CRYPTO frame runs past the packet or too far")
            frames.append((offset, payload[pos : pos + length]))
            pos += length
        elif frame_type == FRAME_CLOSE:
            return frames
        else:
            raise Malformed(f"frame type {frame_type:#x} is not allowed in an Initial packet")
    return frames


class CryptoStream:
    """CRYPTO frame data put back in order; `contiguous()` is the readable prefix.

    Bounded: at most `max_chunks` frames and `max_bytes` of data are kept (a ClientHello spread
    over two or three Initial packets needs a handful).
    """

    def __init__(self, max_chunks: int = 64, max_bytes: int = 16 * 1024) -> None:
        self._chunks: dict[int, bytes] = {}
        self._bytes = 0
        self._max_chunks = max_chunks
        self._max_bytes = max_bytes

    def add(self, offset: int, data: bytes) -> bool:
        """Keep a frame's data; False when the stream is full and it was dropped."""
        previous = self._chunks.get(offset, b"")
        if len(data) <= len(previous):
            return True
        grown = self._bytes + len(data) - len(previous)
        if grown > self._max_bytes or (not previous and len(self._chunks) >= self._max_chunks):
            return False
        self._chunks[offset] = data
        self._bytes = grown
        return True

    def contiguous(self) -> bytes:
        out = bytearray()
        for offset in sorted(self._chunks):
            data = self._chunks[offset]
            if offset > len(out):
                break
            out += data[len(out) - offset :]
        return bytes(out)
