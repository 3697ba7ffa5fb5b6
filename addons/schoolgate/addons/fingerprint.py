"""JA4 fingerprints of TLS ClientHellos: which TLS client opened a connection.

A pinned native app and a browser on the same phone send different ClientHellos, so a
pass-through earned by the app's refused handshakes is kept to the app's fingerprint and the
browser stays inspected. JA4 (FoxIO, BSD-3) sorts the cipher and extension lists before hashing,
so it is stable across Chrome's per-connection extension shuffling, where JA3 is not.
Only the TLS-over-TCP form (`t...`) is computed: QUIC is not proxied.
"""

from __future__ import annotations

import hashlib

from mitmproxy import tls

_SNI = 0x0000
_ALPN = 0x0010
_SIGNATURE_ALGORITHMS = 0x000D
_SUPPORTED_VERSIONS = 0x002B
_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}


def _grease(value: int) -> bool:
    """GREASE values (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa; ignored by JA4."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def _u16s(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "0" * 12


def ja4(hello: tls.ClientHello) -> str:
    """The JA4 fingerprint of a ClientHello, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`."""
    extensions = [(kind, data) for kind, data in hello.extensions if not _grease(kind)]
    ciphers = [suite for suite in hello.cipher_suites if not _grease(suite)]
    by_kind = dict(extensions)
    version = int.from_bytes(hello.raw_bytes(wrap_in_record=False)[:2], "big")
    offered = by_kind.get(_SUPPORTED_VERSIONS)
    if offered:
        listed = [v for v in _u16s(offered[1:]) if not _grease(v)]
        version = max(listed, default=version)
    alpn = hello.alpn_protocols[0].decode("ascii", "replace") if hello.alpn_protocols else ""
    alpn_code = f"{alpn[0]}{alpn[-1]}" if alpn else "00"
    prefix = (
        f"t{_VERSIONS.get(version, '00')}{'d' if _SNI in by_kind else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn_code}"
    )
    cipher_hash = _hash12(",".join(sorted(f"{suite:04x}" for suite in ciphers)))
    kinds = sorted(f"{kind:04x}" for kind, _ in extensions if kind not in (_SNI, _ALPN))
    signatures = by_kind.get(_SIGNATURE_ALGORITHMS, b"")
    algorithms = [f"{value:04x}" for value in _u16s(signatures[2:])]
    text = ",".join(kinds) + ("_" + ",".join(algorithms) if algorithms else "")
    return f"{prefix}_{cipher_hash}_{_hash12(text)}"
