"""JA4 fingerprints of real ClientHellos (Python's ssl as the TLS client)."""

from __future__ import annotations

import re
import ssl

from schoolgate.addons.fingerprint import _grease, ja4
from tests.support.tls_hello import client_hello, plain_context


def test_the_fingerprint_has_the_ja4_shape_and_is_stable() -> None:
    first = ja4(client_hello(plain_context()))
    assert re.fullmatch(r"t1[0-3][di]\d{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}", first), first
    assert ja4(client_hello(plain_context())) == first  # same client, same fingerprint
    assert first.startswith("t13d")  # TLS 1.3 offered, with a server name
    assert first[8:10] == "00"  # no ALPN


def test_another_client_has_another_fingerprint() -> None:
    plain = ja4(client_hello(plain_context()))
    browser_like = plain_context()
    browser_like.set_alpn_protocols(["h2", "http/1.1"])
    with_alpn = ja4(client_hello(browser_like))
    assert with_alpn != plain
    assert with_alpn[8:10] == "h2"
    narrow = plain_context()
    narrow.maximum_version = ssl.TLSVersion.TLSv1_2
    narrow.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    # One suite plus the renegotiation SCSV, which JA4 counts (only GREASE is left out).
    assert ja4(client_hello(narrow)).startswith("t12d02")


def test_no_server_name_is_marked() -> None:
    assert ja4(client_hello(plain_context(), server_name=None))[3] == "i"


def test_grease_values_are_recognised() -> None:
    assert all(_grease(value) for value in (0x0A0A, 0x1A1A, 0xFAFA))
    assert not any(_grease(value) for value in (0x0A1A, 0x1301, 0x0000, 0xC02F))
