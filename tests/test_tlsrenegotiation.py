"""The renegotiation watch (schoolgate.sniffer.tlsrenegotiation): a handshake record from the
client after its Finished is refused; real TLS 1.2 and 1.3 streams made in memory by OpenSSL,
resumed or not, with data both ways, never are. The proxy's pass-through acting on it is tested
end to end (tests/e2e/test_proxy_transparent.py, with `openssl s_client`'s renegotiation)."""

from __future__ import annotations

import contextlib
import os
import ssl

import pytest

from schoolgate.sniffer.tlshello import complete_client_hello
from schoolgate.sniffer.tlsrenegotiation import RenegotiationWatch
from tests.support.certs import takes_names
from tests.support.proxy_harness import make_upstream_pki

NAME = "cats.example"


def record(content_type: int, length: int) -> bytes:
    return bytes([content_type, 3, 3]) + length.to_bytes(2) + os.urandom(length)


KEY_EXCHANGE, CCS, FINISHED = record(0x16, 70), record(0x14, 1), record(0x16, 40)
DATA = record(0x17, 16 * 1024 + 256)
SECOND_HELLO = record(0x16, 600)  # a renegotiation's hello, encrypted: only its header is clear


def fed(stream: bytes, piece: int) -> str:
    watch = RenegotiationWatch()
    for at in range(0, len(stream), piece):
        if watch.feed(stream[at : at + piece]):
            break
    return watch.refusal


@pytest.mark.parametrize("piece", [1, 3, 5, 1000, 1 << 20])
def test_a_handshake_record_after_the_clients_finished_is_refused(piece: int) -> None:
    handshake = KEY_EXCHANGE + CCS + FINISHED
    assert fed(handshake + DATA + DATA, piece) == ""
    refusal = fed(handshake + DATA + SECOND_HELLO + DATA, piece)
    assert "renegotiation" in refusal
    # an abbreviated handshake (a resumed session): the client's ChangeCipherSpec and Finished
    assert "renegotiation" in fed(CCS + FINISHED + SECOND_HELLO, piece)
    # the refusal comes with the record's header, before its body reaches the server
    assert "renegotiation" in fed(handshake + SECOND_HELLO[:5], piece)


def test_tls13_streams_show_no_second_handshake() -> None:
    # middlebox compatibility: a ChangeCipherSpec, then only application-data records; after a
    # HelloRetryRequest, a second hello in clear between them
    assert fed(CCS + DATA + DATA, 7) == ""
    assert fed(CCS + record(0x16, 500) + DATA + DATA, 7) == ""
    assert fed(DATA + DATA, 7) == ""


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    pki = make_upstream_pki(tmp_path_factory.mktemp("pki"), (NAME,))
    server = takes_names(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    server.load_cert_chain(pki.cert_pem, pki.key_pem)
    return server


def client_stream(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """What an OpenSSL client sends: a handshake in memory, then requests both ways."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=NAME, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    sent = bytearray()

    def exchange() -> None:
        for _ in range(20):
            for end in (client, server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
            out, back = c_out.read(), s_out.read()
            sent.extend(out)
            s_in.write(out)
            c_in.write(back)
            if not out and not back:
                return

    exchange()
    for size in (10, 40_000, 3):
        client.write(os.urandom(size))
        server.write(os.urandom(size))
        exchange()
        with contextlib.suppress(ssl.SSLWantReadError):
            server.read(1 << 20)
            client.read(1 << 20)
        exchange()
    return bytes(sent), client.session, client.session_reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_streams_new_and_resumed_are_not_refused(
    server_context: ssl.SSLContext, version: ssl.TLSVersion
) -> None:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.minimum_version = client_ctx.maximum_version = version
    stream, session, _ = client_stream(server_context, client_ctx)
    again, _, reused = client_stream(server_context, client_ctx, session)
    assert reused
    for made in (stream, again):
        whole = complete_client_hello(made)
        assert whole is not None
        after_hello = made[whole[1] :]
        assert b"\x14\x03\x03\x00\x01\x01" in after_hello  # its ChangeCipherSpec
        assert len(after_hello) > 40_000
        for piece in (1, 100, 1 << 20):
            assert fed(after_hello, piece) == "", (version, piece)
