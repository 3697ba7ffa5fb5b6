"""`schoolgate resolve`: the gateway's resolver for pupils' devices (mitmproxy's DNS mode).

A separate process and service from the proxy: it parses only DNS, needs no capability (it
listens on a high port; the gateway's ruleset redirects pupils' port 53 to it) and shares only
the address book with the proxy. Every query is forwarded to the name servers
(`dns_name_servers`, else the gateway's own), A and AAAA too (`ForwardingResolver`), so that a
CNAME chain is seen whole; mitmproxy strips Encrypted ClientHello keys from HTTPS records
(`strip_ech`); `ResolverPolicy` answers encrypted-DNS names with NXDOMAIN and records the
answers in the address book.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from mitmproxy import dns, options
from mitmproxy.addons.dns_resolver import DnsResolver as MitmproxyResolver
from mitmproxy.net.dns import classes, response_codes, types
from mitmproxy.proxy import server as proxy_server
from mitmproxy.tools.dump import DumpMaster
from mitmproxy_rs.dns import DnsResolver, get_system_dns_servers

from schoolgate.addons.tunnelguard import TunnelGuard as TunnelGuard
from schoolgate.config import Config
from schoolgate.endpoints.catalog import Catalog
from schoolgate.endpoints.loader import load_catalog
from schoolgate.gateway.addressbook import ADDRESS_BOOK, AddressBook, AddressBookError
from schoolgate.gateway.dnspolicy import NamePolicy
from schoolgate.gateway.fastpath import catalogued_names
from schoolgate.gateway.fastpath_service import socket_path
from schoolgate.gateway.neighbours import NeighbourTable
from schoolgate.gateway.nft import GatewayRuleset

log = logging.getLogger("schoolgate.resolver")


_DEVICE = "schoolgate_device"  # flow metadata: who asked (ResolverPolicy.device)


class ForwardingResolver(MitmproxyResolver):
    """mitmproxy's resolver, forwarding A and AAAA queries to the name servers as it does every
    other type. Its own lookup answers with the asked name alone, which hides a CNAME chain: a
    pupil's name that is an alias of a catalogued host looked like any other name, and its
    addresses went on the fast path (adversarial passes a16 F2, a37 N1)."""

    async def dns_request(self, flow: dns.DNSFlow) -> None:
        if self._should_resolve(flow) and (servers := self.name_servers()):
            flow.server_conn.address = (servers[0], 53)
            return
        await super().dns_request(flow)


class ResolverPolicy:
    """NXDOMAIN for encrypted-DNS and canary names; REFUSED past a device's share of new names
    under one domain (a tunnel); every A/AAAA answer into the address book."""

    def __init__(
        self,
        names: NamePolicy,
        book: AddressBook,
        tunnel: TunnelGuard | None = None,
        neighbours: NeighbourTable | None = None,
        fastpath: FastPathClient | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.names = names
        self.book = book
        self.catalog = catalog
        self.fastpath = fastpath
        self.tunnel = tunnel or TunnelGuard()
        self.neighbours = neighbours
        self.refused = 0

    def device(self, address: str) -> str:
        """Who asks: the MAC behind an address where the gateway sees it, else the address."""
        neighbour = self.neighbours.lookup(address) if self.neighbours and address else None
        return neighbour.mac if neighbour is not None else address

    def dns_request(self, flow: dns.DNSFlow) -> None:
        questions = flow.request.questions
        if not questions:
            return
        if any(self.names.blocks(question.name) for question in questions):
            flow.response = flow.request.fail(response_codes.NXDOMAIN)
            self.refused += 1
            return
        peer = flow.client_conn.peername
        device = self.device(str(peer[0]) if peer else "")
        flow.metadata[_DEVICE] = device  # the answer's report to the fast path names it too
        # Every question counts: a second one carried a tunnel past the first (pass a8).
        if not all(self.tunnel.allows(device, question.name) for question in questions):
            flow.response = flow.request.fail(response_codes.REFUSED)
            self.refused += 1

    async def dns_response(self, flow: dns.DNSFlow) -> None:
        if flow.response is None:
            return
        found: dict[str, tuple[list[str], int]] = {}
        for answer in flow.response.answers:
            if answer.type not in (types.A, types.AAAA):
                continue
            try:
                address = str(
                    answer.ipv4_address if answer.type == types.A else answer.ipv6_address
                )
            except (ValueError, TypeError):
                continue
            addresses, ttl = found.get(answer.name, ([], answer.ttl))
            addresses.append(address)
            found[answer.name] = (addresses, min(ttl, answer.ttl))
        question = flow.request.question
        records, asked = list(found.items()), question
        if found and question is not None and not self._catalogued(question.name):
            records = self._without_dedicated(records)
        if found and self._alias_of_catalogued(flow.response, question):
            # Given out for the chain's catalogued names alone (a CDN name at its end too would
            # hide nothing: its own name is not the alias's)
            every = [a for addresses, _ in found.values() for a in addresses]
            ttl = min(ttl for _, ttl in found.values())
            chain = dict.fromkeys(a.name for a in flow.response.answers if self._catalogued(a.name))
            records, asked = [(name, (every, ttl)) for name in chain], None
        if (
            question is not None
            and self._apps(question.name)
            and list(found) == [question.name]
            and all(answer.name == question.name for answer in flow.response.answers)
        ):
            # A pupil's look-up found a catalogued name straight at its addresses (no CDN's name
            # between), as the gateway's own look-ups do: names booked there before are
            # forgotten now, not at the next scheduled look-up (a44 F6: a window of up to ten
            # minutes, and none ever for a name under a catalogue wildcard).
            self.own_server(question.name, found[question.name][0])
        for name, (addresses, ttl) in records:
            try:
                self.book.record(name, addresses, ttl)
                # A CNAME chain answers for the asked name too: that is the name in the
                # ClientHello, not the CDN name at the end of the chain.
                if asked is not None and asked.name.lower() != name.lower():
                    self.book.record(asked.name, addresses, ttl)
            except AddressBookError:
                log.exception("schoolgate resolver: the address book cannot be written")
        if self.fastpath is not None and found:
            # Every name the answer holds decides (the whole CNAME chain: ForwardingResolver):
            # a catalogued name behind a CNAME keeps the CDN's addresses out of the fast path.
            # The device gets its answer once the addresses are sorted, so its first
            # connection already finds them.
            names = [question.name] if question is not None else []
            names += [answer.name for answer in flow.response.answers]
            addresses = [a for found_addresses, _ in found.values() for a in found_addresses]
            ttl = min(ttl for _, ttl in found.values())
            await self.fastpath.report(names, addresses, ttl, flow.metadata.get(_DEVICE, ""))

    def _without_dedicated(
        self, records: list[tuple[str, tuple[list[str], int]]]
    ) -> list[tuple[str, tuple[list[str], int]]]:
        """The answer's records less, for uncatalogued names, the addresses the gateway holds
        for catalogued names alone and outside every provider's shared ranges: a sharing app's
        own servers, which its names reach with no CDN's name between. A pupil's name pointed
        at one (a name of their own, or a wildcard-address service such as nip.io, directly
        or through a CNAME of their own) was given out for it, so the proxy passed a hello
        naming it through unread (adversarial pass a40 F6). A site on a CDN shares the CDN's
        names, which the gateway holds for the address too, or the providers' ranges."""
        kept: list[tuple[str, tuple[list[str], int]]] = []
        for name, (addresses, ttl) in records:
            if not self._apps(name):
                addresses = [a for a in addresses if not self._dedicated(a)]
            if addresses:
                kept.append((name, (addresses, ttl)))
        return kept

    def _dedicated(self, address: str) -> bool:
        if self.catalog is None or self.catalog.providers.covers(address):
            return False
        try:
            names = self.book.names_for(address)
        except AddressBookError:
            return False
        return bool(names) and all(self._apps(name) for name in names)

    def own_server(self, name: str, addresses: list[str]) -> None:
        """The gateway's own look-up found catalogued `name` straight at `addresses` (no CDN's
        name between): names of others booked for them before are forgotten, so a pupil's name
        booked while an address served no catalogued host does not keep it "shared" once the
        app's server moves onto it (adversarial pass a42 F6)."""
        if self.catalog is None:
            return
        for address in addresses:
            if self.catalog.providers.covers(address):
                continue
            try:
                stale = [n for n in self.book.names_for(address) if not self._apps(n)]
                if stale and self.book.forget(address, stale):
                    log.info("schoolgate resolver: %s is %s's own server now: %s forgotten "
                             "there", address, name, ", ".join(sorted(stale)[:5]))  # fmt: skip
            except AddressBookError:
                log.exception("schoolgate resolver: the address book cannot be written")

    def _apps(self, name: str) -> bool:
        """Catalogued, or the apex of a catalogued wildcard (`cdninstagram.com` for
        `*.cdninstagram.com`): the gateway looks such apexes up itself, and their answer made
        the app's own server look shared (adversarial pass a42 F1)."""
        return self._catalogued(name) or self._catalogued(f"x.{name.rstrip('.')}")

    def _catalogued(self, name: str) -> bool:
        return self.catalog is not None and self.catalog.app_for_host(name) is not None

    def _alias_of_catalogued(self, response: dns.DNSMessage, question: dns.Question | None) -> bool:
        """Whether an uncatalogued name's answer passes through a catalogued one (a pupil's
        name as a CNAME of a sharing app's upload host: a37 N1). Its addresses are then given
        out for the catalogued names alone, so the proxy refuses a hello naming the alias at
        them as fronting; a name pointed straight at the address is `_without_dedicated`'s."""
        if question is None or self._catalogued(question.name):
            return False
        return any(self._catalogued(answer.name) for answer in response.answers)


class FastPathClient:
    """Reports answers to `schoolgate nft fastpath` (which holds the capability to write the
    sets) and checks in while the resolver runs. A report waits at most `timeout_s` for the
    service: if it is slow or away, the answer goes out anyway and the connection meets the
    proxy (the fast path is never needed for anything to work)."""

    def __init__(self, path: Path, timeout_s: float = 0.25) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._complained = float("-inf")
        self.pass_wanted = asyncio.Event()  # the service asked for a catalogued pass

    async def report(
        self, names: list[str], addresses: list[str], ttl: int, device: str = ""
    ) -> None:
        line = json.dumps({"names": names, "addresses": addresses, "ttl": ttl, "device": device})
        await self._send(line.encode() + b"\n")

    async def keepalive(self, every_s: float = 5.0) -> None:
        while True:
            await self._send(b"{}\n")
            await asyncio.sleep(every_s)

    async def send_pass_done(self) -> None:
        """Every catalogued name was resolved once: the fast path may start."""
        await self._send(b'{"catalogued_pass": true}\n')
        self.pass_wanted.clear()

    async def _send(self, line: bytes) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self._stream is None:
                        self._stream = await asyncio.open_unix_connection(str(self.path))
                    reader, writer = self._stream
                    writer.write(line)
                    await writer.drain()
                    answer = await reader.readline()
                    if answer == b"ok pass\n":
                        self.pass_wanted.set()
                    elif answer != b"ok\n":
                        raise ConnectionError("the fast-path service hung up")
            except (OSError, TimeoutError, ConnectionError) as error:
                self._drop()
                if time.monotonic() - self._complained > 60:
                    self._complained = time.monotonic()
                    log.warning("schoolgate resolver: the fast-path service at %s is not "
                                "answering (%s): connections meet the proxy", self.path,
                                error or type(error).__name__)  # fmt: skip

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
        self._stream = None


async def resolve_catalogued(
    names: list[str],
    resolver: Any,
    book: AddressBook,
    fastpath: FastPathClient | None = None,
    every_s: float = 600.0,
    concurrency: int = 32,
    name_servers: list[str] | None = None,
    own_server: Callable[[str, list[str]], None] | None = None,
) -> None:
    """Resolve every catalogued name through the resolver's own upstream, every `every_s`, into
    the address book, where the proxy's fronting check looks: a catalogued server's address must
    be known before any pupil asks for its name (adversarial pass a17 P1: a harmless name with
    Discord's Host at Discord's address passed until a pupil had resolved discord.com). With the
    fast path, the answers are reported too, and the service told when a pass is done: it knows
    the catalogued servers' addresses before a pupil's own domain can point at them, and waits
    for the first pass. `resolver`: mitmproxy_rs's DnsResolver (lookup_ipv4/lookup_ipv6)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        addresses: list[str] = []
        async with gate:
            for lookup in (resolver.lookup_ipv4, resolver.lookup_ipv6):
                try:
                    async with asyncio.timeout(5):
                        addresses += await lookup(name)
                except (OSError, TimeoutError, UnicodeError):
                    continue
        if addresses:
            ttl = int(max(every_s, 300) * 2)
            book.record(name, addresses, ttl)
            # The CDN names its answer passed through hold its addresses too: a CDN's edge
            # serves other sites' names, so it is not the app's own server (a42 F3: sites on
            # the Akamai edge that also answered for discord.com were refused as fronting).
            owners = await cdn_owners(name, name_servers or [])
            for owner, owned in (owners or {}).items():
                book.record(owner, owned, ttl)
            if owners == {} and own_server is not None:  # answered, with no CDN's name
                own_server(name, addresses)
            if fastpath is not None:
                await fastpath.report([name], addresses, ttl)

    while True:
        if fastpath is not None:
            # What pupils' lookups taught, still valid: a restarted service, or one whose table
            # was reloaded, must not forget the catalogued addresses among them (a16 F5: after
            # a restart they could be fast-pathed).
            for name, (addresses, left) in book.answers().items():
                await fastpath.report([name], addresses, int(left))
        await asyncio.gather(*(one(name) for name in names))
        log.info("schoolgate resolver: resolved %d catalogued names", len(names))
        if fastpath is not None:
            await fastpath.send_pass_done()
        if every_s <= 0:
            return  # one pass (tests)
        if fastpath is None:
            await asyncio.sleep(every_s)
            continue
        # Every `every_s`, or at once when a restarted fast-path service asks for one.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fastpath.pass_wanted.wait(), every_s)


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def cdn_owners(
    name: str, servers: list[str], timeout_s: float = 3.0, port: int = 53
) -> dict[str, list[str]] | None:
    """The names other than `name` that hold its IPv4 addresses in its answer (the end of a
    CNAME chain: `discord.edgekey.net` for `discord.com`); {} when there is none; None when
    nobody answered.
    The lookup the appliance uses otherwise gives the addresses alone."""
    if not servers:
        return None
    query = dns.DNSMessage(
        random.randrange(1 << 16), True, 0, False, False, True, False, 0, 0,
        [dns.Question(name, types.A, classes.IN)], [], [], [],
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            _OneAnswer, remote_addr=(servers[0], port)
        )
        try:
            transport.sendto(query.packed)
            reply = dns.DNSMessage.unpack(await asyncio.wait_for(protocol.answer, timeout_s))
        finally:
            transport.close()
    except (OSError, TimeoutError, ValueError, struct.error):
        return None
    owners: dict[str, list[str]] = {}
    asked = name.lower().rstrip(".")
    for answer in reply.answers:
        if answer.type == types.A and answer.name.lower().rstrip(".") != asked:
            with contextlib.suppress(ValueError, TypeError):
                owners.setdefault(answer.name, []).append(str(answer.ipv4_address))
    return owners


class Banner:
    """One clear line once the listener is up."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def running(self) -> None:
        resolver = self.config.resolver
        log.warning(
            "schoolgate resolver listening on %s:%d (DNS, UDP and TCP); name servers: %s",
            resolver.listen_host,
            resolver.listen_port,
            ", ".join(resolver.upstream) or "the gateway's own",
        )


def _system_name_servers() -> list[str]:
    try:
        return list(get_system_dns_servers())
    except RuntimeError:
        return []


def resolver_options(config: Config) -> dict[str, Any]:
    resolver = config.resolver
    settings: dict[str, Any] = {
        "mode": [f"dns@{resolver.listen_port}"],
        "listen_host": resolver.listen_host,
        "strip_ech": resolver.strip_ech,
        # HTTPS records advertising HTTP/3 lose it: UDP 443 is rejected at the gateway anyway.
        "http3": False,
        "confdir": str(config.data_dir / "resolver"),
    }
    if resolver.upstream:
        settings["dns_name_servers"] = list(resolver.upstream)
    return settings


# mitmproxy_rs keeps each UDP peer's state for 60 s after its last datagram (its network/udp.rs
# UDP_TIMEOUT, refreshed by every datagram) and drops what arrives for a connection that Python
# has closed. mitmproxy closes an idle UDP connection after 20 s (mitmproxy.proxy.server
# .UDP_TIMEOUT), so a device's next query from the same source port 20-60 s later was lost,
# and each lost retry kept the dead state alive (adversarial passes a51 F2, a87 F6, a88: 0.4%
# of look-ups failed under load, where glibc picks a random port per look-up). Past 60 s,
# mitmproxy_rs ends the connection itself, and a datagram after that opens a new one.
UDP_IDLE_S: Final = 65


def keep_udp_connections_past_mitmproxy_rs() -> None:
    """Python's UDP idle timeout past mitmproxy_rs's (above), in this process."""
    proxy_server.UDP_TIMEOUT = UDP_IDLE_S


async def serve_resolver(config: Config) -> int:
    """Run the resolver until SIGINT/SIGTERM; returns the exit status."""
    resolver = config.resolver
    keep_udp_connections_past_mitmproxy_rs()
    book = AddressBook(config.data_dir / ADDRESS_BOOK, min_ttl_s=resolver.min_ttl_s)
    names = NamePolicy(resolver.block_names, block_doh=resolver.block_doh)
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    # The policy goes before the resolver, which replaces mitmproxy's own: a refused name is
    # never asked upstream.
    builtin = master.addons.get("dnsresolver")  # type: ignore[no-untyped-call]
    master.addons.remove(builtin)  # type: ignore[no-untyped-call]
    fastpath = FastPathClient(socket_path(config)) if GatewayRuleset(config).fast_path else None
    catalog = load_catalog(list(config.proxy.endpoints_files))
    policy = ResolverPolicy(
        names, book, neighbours=NeighbourTable(), fastpath=fastpath, catalog=catalog
    )
    master.addons.add(Banner(config), policy, ForwardingResolver())  # type: ignore[no-untyped-call]
    opts.update(**resolver_options(config))  # type: ignore[no-untyped-call]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    upstream = DnsResolver(name_servers=list(resolver.upstream) or None)
    catalogued = catalogued_names(catalog)
    servers = list(resolver.upstream) or _system_name_servers()
    first = resolve_catalogued(
        catalogued, upstream, book, fastpath, name_servers=servers, own_server=policy.own_server
    )
    chores = [asyncio.create_task(first)]
    if fastpath is not None:
        chores.append(asyncio.create_task(fastpath.keepalive()))
    try:
        await master.run()
    except SystemExit as exc:  # mitmproxy's start-up checks (port in use) exit
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for chore in chores:
            chore.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        book.close()
    log.warning("schoolgate resolver stopped")
    return 0
