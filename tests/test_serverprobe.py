"""Whether an address serves a catalogued name, asked of real TLS servers on loopback that
choose their certificate by the hello's name, as shared servers do (gateway.serverprobe)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolgate.gateway.serverprobe import ServerProbe, Serves, covers, server_certificate
from schoolgate.sniffer.tlshello import ClientHello
from schoolgate.sniffer.tlsresume import Resume, ResumeCheck, SessionBook
from tests.support.certs import certificate
from tests.test_tlsresume import server_hello

CATALOGUED = ["chat.example", "media.example", "www.uploads.example"]
CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"


def serve(
    contexts: dict[str, ssl.SSLContext], default: ssl.SSLContext
) -> tuple[int, socket.socket]:
    """A TLS server on 127.0.0.1 that picks its certificate by the hello's name."""

    def choose(tls: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name in contexts:
            tls.context = contexts[name]

    default.sni_callback = choose
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with default.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], listener


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, int]]:
    news = certificate(tmp_path, "news.example")
    shared = {"media.example": certificate(tmp_path, "media.example", "*.media.example")}
    ports, listeners = {}, []
    for kind, contexts in (("shared", shared), ("clear", {})):
        port, listener = serve(contexts, certificate(tmp_path, "news.example") if contexts
                               else news)  # fmt: skip
        ports[kind] = port
        listeners.append(listener)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        ports["closed"] = closed.getsockname()[1]
    yield ports
    for listener in listeners:
        listener.close()


def probe_of(port: int, **kwargs: object) -> ServerProbe:
    return ServerProbe(CATALOGUED, fetch=lambda a, n: server_certificate(a, n, port), **kwargs)  # type: ignore[arg-type]


def test_an_address_that_serves_a_catalogued_name_shows_it_when_asked(
    servers: dict[str, int],
) -> None:
    assert probe_of(servers["shared"]).probe("127.0.0.1") is Serves.CATALOGUED
    assert probe_of(servers["clear"]).probe("127.0.0.1") is Serves.CLEAR
    assert probe_of(servers["closed"]).probe("127.0.0.1") is Serves.UNANSWERED
    # a certificate that names a catalogued host counts, whichever name was asked for (a
    # wildcard of the catalog is probed by its base and www only)
    pool = ServerProbe(["www.news.example"], catalogued=lambda name: name == "news.example",
                       fetch=lambda a, n: server_certificate(a, n, servers["clear"]))  # fmt: skip
    assert pool.probe("127.0.0.1") is Serves.CATALOGUED


def test_certificate_names_cover_as_tls_says() -> None:
    assert covers("*.media.example", "up.media.example")
    assert not covers("*.media.example", "media.example")
    assert not covers("*.media.example", "a.b.media.example")
    assert covers("media.example", "media.example")


def test_probes_start_in_the_background_and_are_bounded(servers: dict[str, int]) -> None:
    probe = probe_of(servers["clear"], per_minute=1)
    assert probe.resumable("127.0.0.1") is False  # not known yet: refused, and a probe starts
    deadline = time.monotonic() + 10
    while probe.verdict("127.0.0.1") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probe.resumable("127.0.0.1") is True
    assert probe.consider("127.0.0.2") is False  # this minute's one probe is spent
    probe.close()


def test_a_session_made_elsewhere_resumes_only_where_no_catalogued_name_is_served() -> None:
    clear = {"198.51.100.7": True, "198.51.100.8": False}
    book = SessionBook()
    for address, allowed in clear.items():
        check = ResumeCheck(ClientHello("news.example", session_id=b"h" * 32), address, book,
                            clear.__getitem__)  # fmt: skip
        check.feed(server_hello(b"h" * 32, CHANGE_CIPHER_SPEC))
        assert (check.verdict() is Resume.DONE) is allowed, address
    # a renewed ticket of a session let go without the book's word is not booked (a29: one
    # allowed resumption laundered a session's name into the book)
    renewal = b"\x00\x00\x0e\x10" + (8).to_bytes(2, "big") + b"renewed!"
    message = b"\x04" + len(renewal).to_bytes(3, "big") + renewal
    record = b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message
    check = ResumeCheck(ClientHello("news.example", ticket=b"made elsewhere"), "198.51.100.7",
                        book, clear.__getitem__)  # fmt: skip
    check.feed(server_hello(b"", record + CHANGE_CIPHER_SPEC))
    assert check.verdict() is Resume.DONE
    assert book.name("198.51.100.7", "ticket", b"renewed!") is None
    # a session the book saw issued under another name is refused wherever it is
    book.issued("198.51.100.7", "id", b"c" * 32, "media.example")
    check = ResumeCheck(ClientHello("news.example", session_id=b"c" * 32), "198.51.100.7", book,
                        clear.__getitem__)  # fmt: skip
    check.feed(server_hello(b"c" * 32, CHANGE_CIPHER_SPEC))
    assert check.verdict() is Resume.REFUSE
