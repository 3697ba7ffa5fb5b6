"""`schoolgate nft fastpath` and the resolver's side of it, in-process over a real Unix socket:
answers are sorted and written before the device gets them, the heartbeat lives only while the
resolver checks in and the catalogued names are known, a reloaded ruleset is restated, and a
missing service never holds an answer up (issue 20)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy.dns import ResourceRecord
from mitmproxy.test import tflow

from schoolgate.addons.resolver import FastPathClient, ResolverPolicy, resolve_catalogued
from schoolgate.endpoints.loader import parse_catalog
from schoolgate.gateway.addressbook import AddressBook
from schoolgate.gateway.dnspolicy import NamePolicy
from schoolgate.gateway.fastpath import catalogued_names
from schoolgate.gateway.fastpath_service import RESOLVER_SILENT_S, FastPathService
from schoolgate.gateway.nft import NftError
from schoolgate.sniffer.sessionfile import SessionKeeper
from schoolgate.sniffer.tlsresume import SessionBook
from tests.support.alert_helpers import FakeClock

CATALOG = """
apps:
  chat:
    hosts: [chat.example, "*.chat.example"]
    inspection: full
    when_not_inspectable: block_by_sni
"""


class Nft:
    """Stands in for nft: records the scripts; the heartbeat is present once one armed it."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.reloaded = False
        self.queue_error: str | None = None  # why the queue rule cannot be put in place

    def queue(self) -> None:
        if self.queue_error is not None:
            raise NftError(self.queue_error)

    def run(self, script: str) -> None:
        self.scripts.append(script)
        self.reloaded = False

    def present(self) -> bool:
        return not self.reloaded and any("fast_ready { tcp timeout" in s for s in self.scripts)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, nft: Nft, clock: FakeClock
) -> AsyncIterator[tuple[FastPathService, Path]]:
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    path = tmp_path / "fastpath.sock"
    server = await asyncio.start_unix_server(service.handle, path=str(path))
    writer = asyncio.create_task(service.writer_loop())
    try:
        yield service, path
    finally:
        writer.cancel()
        server.close()


async def client_before_the_rules(service: FastPathService, path: Path, nft: Nft) -> None:
    """Before the heartbeat's step has put the queue rules in place, an answer is written but
    starts no fast path (a heartbeat before the rules dropped new connections' SYNs)."""
    await FastPathClient(path, timeout_s=2).report(["early.example"], ["192.0.2.81"], 60)
    assert any("fast_v4 { 192.0.2.81 timeout" in s for s in nft.scripts)
    assert not any("fast_ready { tcp timeout" in s for s in nft.scripts)


def test_an_answer_is_written_before_the_resolver_releases_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        nft, clock = Nft(), FakeClock(start=1000.0)
        async with running(tmp_path, nft, clock) as (service, path):
            service.report(b'{"catalogued_pass": true}')
            await client_before_the_rules(service, path, nft)
            service.beat()  # the heartbeat's step: queue rules in place, then the heartbeat
            client = FastPathClient(path, timeout_s=2)
            await client.report(["news.example"], ["192.0.2.80"], 60)
            assert any("fast_v4 { 192.0.2.80 timeout" in s for s in nft.scripts)
            assert "fast_ready { tcp timeout" in nft.scripts[-1]  # the resolver is alive
            await client.report(["web.chat.example", "edge.cdn.example"], ["192.0.2.90"], 60)
            assert "catalogued_v4 { 192.0.2.90" in nft.scripts[-1]
            written = len(nft.scripts)
            await client.report(["news.example"], ["192.0.2.80"], 60)  # nothing new
            assert len(nft.scripts) == written

    asyncio.run(scenario())


def test_no_heartbeat_until_the_catalogued_names_are_known_or_while_the_resolver_is_silent(
    tmp_path: Path,
) -> None:
    nft, clock = Nft(), FakeClock(start=1000.0)
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    service.report(b'{"names": ["news.example"], "addresses": ["192.0.2.80"], "ttl": 60}')
    service.flush()
    assert "fast_ready" not in nft.scripts[-1]  # the gateway has not resolved the catalog yet
    service.beat()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")
    service.report(b'{"catalogued_pass": true}')
    service.beat()
    assert "fast_ready { tcp timeout" in nft.scripts[-1]
    clock.advance(RESOLVER_SILENT_S + 1)  # the resolver stopped checking in
    service.beat()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")
    service.report(b"{}")  # it is back
    nft.reloaded = True  # meanwhile `schoolgate nft apply` replaced the table: sets empty
    service.beat()
    assert "fast_v4 { 192.0.2.80 timeout" in nft.scripts[-1]  # restated
    assert "fast_ready { tcp timeout" in nft.scripts[-1]


def test_failing_nft_is_counted_and_reports_that_are_not_json_are_ignored(tmp_path: Path) -> None:
    from schoolgate.gateway.nft import NftError

    def broken(script: str) -> None:
        raise NftError("nft -f - failed: No such file or directory")

    service = FastPathService(parse_catalog(CATALOG), runner=broken, present=lambda: False)
    assert not service.report(b"not json")
    assert not service.report(b'{"addresses": "192.0.2.1"}')  # a string is not a list of them
    assert service.report(b'{"names": ["a.example"], "addresses": ["192.0.2.1"], "ttl": 1}')
    service.flush()
    assert service.failures == 1


def test_the_resolver_answers_at_once_when_the_service_is_away(tmp_path: Path) -> None:
    async def scenario() -> float:
        client = FastPathClient(tmp_path / "nobody-listens.sock", timeout_s=0.25)
        started = time.monotonic()
        await client.report(["news.example"], ["192.0.2.80"], 60)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


def test_the_resolvers_policy_reports_every_name_of_the_chain(tmp_path: Path) -> None:
    class Recorder(FastPathClient):
        def __init__(self) -> None:
            super().__init__(tmp_path / "unused.sock")
            self.reports: list[tuple[list[str], list[str], int, str]] = []

        async def report(
            self, names: list[str], addresses: list[str], ttl: int, device: str = ""
        ) -> None:
            self.reports.append((names, addresses, ttl, device))

    recorder = Recorder()
    policy = ResolverPolicy(NamePolicy(()), AddressBook(tmp_path / "b.sqlite"),
                            fastpath=recorder)  # fmt: skip
    flow = tflow.tdnsflow(resp=True)
    flow.request.questions[0].name = "web.chat.example"
    assert flow.response is not None
    flow.response.answers = [
        ResourceRecord("web.chat.example", 5, 1, 300, b"\x04edge\x03cdn\x07example\x00"),
        ResourceRecord("edge.cdn.example", 1, 1, 40, bytes([192, 0, 2, 90])),
    ]
    policy.dns_request(flow)  # as mitmproxy calls it: the question first
    asyncio.run(policy.dns_response(flow))
    ((names, addresses, ttl, device),) = recorder.reports
    assert "web.chat.example" in names
    assert "edge.cdn.example" in names
    assert (addresses, ttl) == (["192.0.2.90"], 40)
    assert device == str(flow.client_conn.peername[0])  # who asked: the per-device cap's key


@pytest.mark.parametrize("line", [b"", b"{", b'{"addresses": [1, 2]}'])
def test_odd_lines_do_not_break_the_service(line: bytes) -> None:
    service = FastPathService(parse_catalog(CATALOG), runner=lambda s: None,
                              present=lambda: True)  # fmt: skip
    service.report(line)  # no exception


def test_the_resolver_resolves_every_catalogued_name_and_says_when_it_is_done(
    tmp_path: Path,
) -> None:
    class Upstream:
        """mitmproxy_rs's DnsResolver as far as the pass uses it."""

        async def lookup_ipv4(self, name: str) -> list[str]:
            if name == "chat.example":
                return ["192.0.2.90"]
            raise socket.gaierror("no such name")

        async def lookup_ipv6(self, name: str) -> list[str]:
            raise socket.gaierror("no AAAA")

    async def scenario() -> FastPathService:
        nft, clock = Nft(), FakeClock(start=1000.0)
        async with running(tmp_path, nft, clock) as (service, path):
            client = FastPathClient(path, timeout_s=2)
            names = catalogued_names(parse_catalog(CATALOG))
            # What pupils' lookups taught the resolver is restated too (a16 F5: a restarted
            # service forgot catalogued addresses only pupils had asked for).
            book = AddressBook(tmp_path / "book.sqlite")
            book.record("uploads.chat.example", ["192.0.2.77"], 600)
            book.record("news.example", ["192.0.2.80"], 600)
            await resolve_catalogued(names, Upstream(), book, client, every_s=0)
            # and the gateway's own answers go into the book, where the proxy's fronting check
            # looks (a17 P1: Discord's address was unknown there until a pupil asked for it)
            assert "chat.example" in book.names_for("192.0.2.90")
            book.close()
            assert any("catalogued_v4 { 192.0.2.90" in s for s in nft.scripts)
            assert any("catalogued_v4 { 192.0.2.77" in s for s in nft.scripts)
            assert any("fast_v4 { 192.0.2.80" in s for s in nft.scripts)
            return service

    assert asyncio.run(scenario()).catalogued_known


def test_without_the_fast_path_the_catalogued_names_still_reach_the_address_book(
    tmp_path: Path,
) -> None:
    """The proxy's fronting check asks the book which names an address served. The default
    gateway (resolver on, fast path off) learnt a catalogued server's address only from a
    pupil's lookup, so a harmless name at Discord's hard-coded address passed unread (a17 P1,
    fixed only with the fast path on)."""

    class Upstream:
        async def lookup_ipv4(self, name: str) -> list[str]:
            return ["192.0.2.90"] if name == "chat.example" else []

        async def lookup_ipv6(self, name: str) -> list[str]:
            return []

    book = AddressBook(tmp_path / "book.sqlite")
    try:
        names = catalogued_names(parse_catalog(CATALOG))
        asyncio.run(resolve_catalogued(names, Upstream(), book, None, every_s=0))
        assert "chat.example" in book.names_for("192.0.2.90")
    finally:
        book.close()


def test_an_answer_brings_at_most_sixteen_addresses_to_the_fast_set() -> None:
    """Adversarial pass a16 (F6): answers of a hundred addresses each filled the set."""
    written: list[str] = []
    service = FastPathService(parse_catalog(CATALOG), runner=written.append,
                              present=lambda: True)  # fmt: skip
    many = [f"192.0.2.{n}" for n in range(1, 101)]
    line = json.dumps({"names": ["flood.example"], "addresses": many, "ttl": 3600})
    assert service.report(line.encode())
    assert service.sets.sizes() == (16, 0)


def test_no_heartbeat_while_the_queue_rule_cannot_be_put_in_place() -> None:
    """Without it nothing reads a fast-pathed connection's first flight (and the table drops
    what such a connection sends): the fast path lapses, so everything meets the proxy."""
    nft, clock = Nft(), FakeClock(start=1000.0)
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    service.report(b'{"catalogued_pass": true}')
    service.beat()
    assert "fast_ready { tcp timeout" in nft.scripts[-1]
    nft.queue_error = "iptables-nft is not installed"
    service.beat()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")
    assert service.failures == 1
    nft.queue_error = None
    service.beat()
    assert "fast_ready { tcp timeout" in nft.scripts[-1]
    service.queue_read = False  # the queue's reader thread ended: nothing answers the queue
    service.beat()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")


def test_an_address_the_first_flight_refused_is_withdrawn_at_the_next_write() -> None:
    nft, clock = Nft(), FakeClock(start=1000.0)
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    service.report(b'{"catalogued_pass": true}')
    service.report(b'{"names": ["pupil.example"], "addresses": ["192.0.2.66"], "ttl": 60}')
    service.flush()
    reset: list[str] = []

    async def scenario() -> None:
        writer = asyncio.create_task(service.writer_loop())
        service.withdraw("192.0.2.66", lambda: reset.append(nft.scripts[-1]))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if reset:
                break
        writer.cancel()

    asyncio.run(scenario())
    # the refused connection is reset only once its address is written to the withdrawn set
    assert reset
    assert "withdrawn_v4 { 192.0.2.66 timeout" in reset[0]
    # the reader's check asks the service's own catalog
    assert service.reader.check.catalogued("up.chat.example")
    assert not service.reader.check.catalogued("news.example")


def test_a_second_withdrawal_soon_after_the_first_waits_to_hand_over_the_book(
    tmp_path: Path,
) -> None:
    """Adversarial pass a37 R3: two addresses withdrawn within HANDOFF_GAP_S, and the second's
    book write was skipped, so the proxy refused the sessions issued between the writes until
    the next periodic one (minutes). The second move now waits for the book's turn, and the
    refused connection's reset with it (the check holds its resends meanwhile)."""
    nft, clock = Nft(), FakeClock(start=1000.0)
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    service.report(b'{"catalogued_pass": true}')
    service.report(b'{"names": ["pupil.example"], "addresses": ["192.0.2.66", "192.0.2.67"], '
                   b'"ttl": 60}')  # fmt: skip
    service.flush()
    book = tmp_path / "book.json"
    service.keeper = SessionKeeper(service.sessions, book)
    service.keeper.last -= 60  # last written a minute ago
    on_disk: list[bytes] = []

    async def withdrawn(address: str, credential: bytes) -> None:
        service.sessions.issued(address, "ticket", credential, "pupil.example", "192.0.2.10")
        service.withdraw(address, lambda: on_disk.append(book.read_bytes()))
        expected = len(on_disk) + 1
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(on_disk) == expected:
                return

    async def scenario() -> None:
        writer = asyncio.create_task(service.writer_loop())
        await withdrawn("192.0.2.66", b"first")
        await withdrawn("192.0.2.67", b"a-second-later")
        writer.cancel()

    asyncio.run(scenario())
    assert len(on_disk) == 2
    read = SessionBook()
    read.restore(on_disk[1])
    # when the second address's connection is reset (its retry meets the proxy), the book the
    # proxy reads holds that address's session
    assert read.name("192.0.2.67", "ticket", b"a-second-later") == "pupil.example"


def test_nothing_written_after_the_service_stopped_rearms_the_heartbeat() -> None:
    """A heartbeat step still running in its thread when the service stops must not write the
    heartbeat back after the stop ended it."""
    nft, clock = Nft(), FakeClock(start=1000.0)
    service = FastPathService(parse_catalog(CATALOG), runner=nft.run, present=nft.present,
                              queue_rules=nft.queue, clock=clock)  # fmt: skip
    service.report(b'{"catalogued_pass": true}')
    service.stop()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")
    service.beat()
    service.report(b'{"names": ["news.example"], "addresses": ["192.0.2.80"], "ttl": 60}')
    service.flush()
    assert nft.scripts[-1].startswith("flush set inet schoolgate fast_ready")
