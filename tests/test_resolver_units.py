"""The resolver's pure parts: refused names, the address book, its settings and its firewall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schoolgate.config import parse_config
from schoolgate.errors import ConfigError
from schoolgate.gateway.addressbook import AddressBook, fronting_unchecked
from schoolgate.gateway.dnspolicy import NamePolicy
from schoolgate.gateway.nft import GatewayRuleset


@pytest.mark.parametrize(
    ("name", "blocked"),
    [
        ("use-application-dns.net", True),
        ("USE-APPLICATION-DNS.NET.", True),
        ("mask.icloud.com", True),
        ("mask-h2.icloud.com", True),
        ("dns.google", True),
        ("mozilla.cloudflare-dns.com", True),  # a subdomain of a listed endpoint
        ("cloudflare.com", False),
        ("www.google.com", False),
        ("icloud.com", False),
        ("notdns.google.example", False),
        ("games.example.org", True),  # the school's own addition
    ],
)
def test_name_policy(name: str, blocked: bool) -> None:
    assert NamePolicy(["example.org"]).blocks(name) is blocked


def test_doh_names_can_be_left_to_the_school() -> None:
    policy = NamePolicy(block_doh=False)
    assert not policy.blocks("dns.google")
    assert policy.blocks("use-application-dns.net")  # the canaries always answer NXDOMAIN


def test_address_book_keeps_answers_for_at_least_the_minimum(tmp_path: Path) -> None:
    now = [1000.0]
    book = AddressBook(tmp_path / "a.sqlite", min_ttl_s=600, clock=lambda: now[0])
    reader = AddressBook(tmp_path / "a.sqlite", min_ttl_s=600, clock=lambda: now[0])
    try:
        book.record("Media.Example.", ["198.51.100.2", "2001:db8::2"], ttl_s=30)
        book.record("other.example", ["198.51.100.2", "not an address"], ttl_s=3600)
        # Another process (the proxy) reads what the resolver wrote.
        assert reader.names_for("198.51.100.2") == {"media.example", "other.example"}
        assert reader.names_for("::ffff:198.51.100.2") == {"media.example", "other.example"}
        assert reader.names_for("2001:db8:0::2") == {"media.example"}
        assert reader.names_for("garbage") == frozenset()
        now[0] += 601  # the 30 s TTL was stretched to 600 s, no further
        assert reader.names_for("198.51.100.2") == {"other.example"}
        now[0] += 3000
        assert reader.names_for("198.51.100.2") == frozenset()
    finally:
        book.close()
        reader.close()


def test_resolver_settings_and_errors(data_dir: Path) -> None:
    config = parse_config(
        "resolver: {enabled: true, upstream: [192.0.2.53, '2001:db8::53'], block_names: [x.org]}",
        "site.yaml",
    )
    assert config.resolver.upstream == ("192.0.2.53", "2001:db8::53")
    assert config.resolver.listen_port == 8053
    for text, key in (
        ("resolver: {upstream: [192.0.2.0/24]}", "resolver.upstream[0]"),
        ("resolver: {block_names: ['not a name']}", "resolver.block_names[0]"),
        ("resolver: {listen_port: 70000}", "resolver.listen_port"),
        ("proxy: {sni_mismatch: sometimes}", "proxy.sni_mismatch"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "site.yaml")
        assert caught.value.key_path == key


def test_the_ruleset_sends_every_pupil_dns_query_to_the_resolver(data_dir: Path) -> None:
    base = (
        "proxy: {mode: transparent, listen_host: 0.0.0.0}\ngateway: {student_interfaces: [wlan0]}\n"
    )
    off = GatewayRuleset(parse_config(base, "site.yaml")).render()
    on = GatewayRuleset(parse_config(base + "resolver: {enabled: true}\n", "site.yaml")).render()
    redirect = 'meta l4proto { tcp, udp } th dport 53 counter redirect to :8053 comment "resolver"'
    assert redirect not in off
    assert redirect in on
    assert "th dport 8053 ct status dnat accept" in on  # only redirected queries reach it


def test_resolve_does_nothing_when_the_resolver_is_off(data_dir: Path, tmp_path: Path) -> None:
    from schoolgate.cli.app import main

    config = tmp_path / "site.yaml"
    config.write_text("resolver: {enabled: false}\n")
    assert main(["resolve", "--config", str(config)]) == 0


def test_tunnel_guard_counts_new_names_per_device_and_domain() -> None:
    from schoolgate.addons.resolver import TunnelGuard

    now = [0.0]
    guard = TunnelGuard(limit=3, window_s=60, clock=lambda: now[0])
    assert all(guard.allows("a", f"{n}.t.example") for n in range(3))
    assert not guard.allows("a", "9.t.example")
    assert guard.allows("a", "1.t.example")  # a name already asked for
    assert guard.allows("b", "9.t.example")  # another device
    assert guard.allows("a", "x.other.example")  # another domain
    assert guard.allows("a", "a.school.co.uk")  # co.uk is not one domain for everyone...
    assert all(guard.allows("a", f"{n}.other.co.uk") for n in range(2))
    now[0] = 61.0
    assert guard.allows("a", "9.t.example")  # a new minute


def test_tunnel_guard_budgets_a_tunnel_kept_under_the_minutes_limit() -> None:
    """Adversarial pass a6: 109 names a minute under one domain, or 50 a minute under each of
    twelve domains, moved a picture in five minutes."""
    from schoolgate.addons.resolver import TunnelGuard

    now = [0.0]
    guard = TunnelGuard(limit=120, window_s=60, clock=lambda: now[0], sustained=240, total=1500)
    allowed = 0
    for n in range(600):  # 109 a minute for 5.5 minutes
        now[0] = n * 0.55
        allowed += guard.allows("dev", f"{n}.tunnel.example")
    assert allowed == 240
    spread = TunnelGuard(clock=lambda: now[0], sustained=240, total=1500)
    allowed = 0
    for n in range(3000):  # 12 domains, 50 a minute each
        now[0] = 1000 + n * 0.1
        allowed += spread.allows("dev", f"{n}.t{n % 12}.example")
    assert allowed == 1500
    now[0] += 601
    assert spread.allows("dev", "again.t1.example")  # ten minutes later the budget is back
    assert spread.allows("other", "9999.t1.example")  # another device has its own


def test_a_device_is_its_mac_where_the_gateway_sees_it(tmp_path: Path) -> None:
    from schoolgate.addons.resolver import ResolverPolicy, TunnelGuard
    from schoolgate.gateway.addressbook import AddressBook
    from schoolgate.gateway.dnspolicy import NamePolicy
    from schoolgate.gateway.neighbours import NeighbourTable

    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "192.0.2.10       0x1         0x2         02:00:00:00:00:10     *        g0\n"
        "192.0.2.11       0x1         0x2         02:00:00:00:00:10     *        g0\n"
    )
    policy = ResolverPolicy(
        NamePolicy(()),
        AddressBook(tmp_path / "book.sqlite"),
        TunnelGuard(limit=2),
        neighbours=NeighbourTable(arp_path=arp, read_v6=lambda: "[]"),
    )
    assert policy.device("192.0.2.10") == policy.device("192.0.2.11") == "02:00:00:00:00:10"
    assert policy.device("192.0.2.99") == "192.0.2.99"  # not a neighbour: its address
    assert policy.tunnel.allows(policy.device("192.0.2.10"), "a.t.example")
    assert policy.tunnel.allows(policy.device("192.0.2.11"), "b.t.example")
    assert not policy.tunnel.allows(policy.device("192.0.2.11"), "c.t.example")


def test_a_domain_has_a_school_wide_budget_but_the_big_providers_do_not() -> None:
    """Adversarial pass a8: a laptop with six virtual interfaces is six devices, and spoofed
    addresses that never answer ARP have no MAC; the tunnel's zone is the pupil's own, and the
    whole school asking for thousands of different names under it is the tell."""
    from schoolgate.addons.resolver import TunnelGuard

    now = [0.0]
    guard = TunnelGuard(clock=lambda: now[0], sustained=240, school_limit=500)
    allowed = 0
    for n in range(1200):  # six "devices", 200 names each, under one pupil-run domain
        now[0] = n * 0.1
        allowed += guard.allows(f"dev{n % 6}", f"{n}.pupil.example")
    assert allowed == 500
    for n in range(1200):  # the same across a provider's shared apex: ordinary
        now[0] = 700 + n * 0.1
        assert guard.allows(f"dev{n % 6}", f"d{n}.cloudfront.net")


def test_a_flood_of_names_under_one_domain_does_not_lock_other_devices_out() -> None:
    """Adversarial pass a40 F7: one laptop's three MACs asked 500 names under a tenant domain
    that answers every name (an LMS) in two minutes, and every other device of the school was
    refused its new names there for ten minutes."""
    from schoolgate.addons.resolver import TunnelGuard

    now = [0.0]
    guard = TunnelGuard(clock=lambda: now[0], school_limit=500)
    flood = 0
    for n in range(660):  # three MACs, 220 names each, under the budget a device has
        now[0] = n * 0.15
        flood += guard.allows(f"mac{n % 3}", f"x{n}.lms.example")
    assert flood == 500  # the school-wide budget still bounds a tunnel spread over devices
    # another device, a few ordinary names of its own: answered
    assert all(guard.allows("teacher", f"course{n}.lms.example") for n in range(10))
    assert not guard.allows("mac0", "more.lms.example")  # the flooders stay refused


def test_every_question_of_a_query_is_counted(tmp_path: Path) -> None:
    """Adversarial pass a8: queries with two questions carried the tunnel in the second."""
    from mitmproxy.dns import Question
    from mitmproxy.test import tflow

    from schoolgate.addons.resolver import ResolverPolicy, TunnelGuard

    policy = ResolverPolicy(
        NamePolicy(()), AddressBook(tmp_path / "b.sqlite"), TunnelGuard(limit=2)
    )
    refused = []
    for n in range(4):
        flow = tflow.tdnsflow()
        flow.request.questions = [
            Question("www.school.example", 1, 1),
            Question(f"{n}.tunnel.example", 1, 1),
        ]
        policy.dns_request(flow)
        refused.append(flow.response is not None)
    assert refused == [False, False, True, True]


def test_the_default_school_wide_budget_is_below_one_picture() -> None:
    """Adversarial pass a9: a 72 KB picture needs some 600 names; six MACs asked for them under
    one domain, each well inside its own budget, and the school-wide 2,000 let it through."""
    from schoolgate.addons.resolver import TunnelGuard

    now = [0.0]
    guard = TunnelGuard(clock=lambda: now[0])
    allowed = 0
    for n in range(660):
        now[0] = n * 0.5
        allowed += guard.allows(f"02:00:00:00:00:{n % 6:02x}", f"{n}.pupil.example")
    assert allowed < 600


def test_leased_pairs_only_needs_the_lease_files() -> None:
    with pytest.raises(
        ConfigError, match=r"gateway\.leased_pairs_only: needs the DHCP server's lease"
    ):
        parse_config("gateway: {leased_pairs_only: true}\n", "site.yaml")
    config = parse_config(
        "gateway: {leased_pairs_only: true}\n"
        "proxy: {dhcp_leases: [/var/lib/misc/dnsmasq.leases]}\n",
        "site.yaml",
    )
    assert config.gateway.leased_pairs_only


def test_an_alias_of_a_catalogued_host_is_not_given_out_for_its_addresses(tmp_path: Path) -> None:
    """Adversarial pass a37 N1: a pupil's own name, a CNAME of a sharing app's upload host, was
    given out for that host's address, so the proxy passed a hello naming it through unread
    (and the fast path, which never saw the chain, carried it). The alias is not recorded for
    those addresses (the proxy refuses it there as fronting); the catalogued name is. An
    ordinary CDN alias is recorded as before."""
    import asyncio
    import itertools

    from mitmproxy.dns import ResourceRecord
    from mitmproxy.test import tflow

    from schoolgate.addons.resolver import ResolverPolicy
    from schoolgate.endpoints.loader import parse_catalog

    catalog = parse_catalog(
        'apps:\n  chat:\n    hosts: ["*.chat.example"]\n    inspection: full\n'
        "    when_not_inspectable: block_by_sni\n"
    )
    book = AddressBook(tmp_path / "b.sqlite")
    policy = ResolverPolicy(NamePolicy(()), book, catalog=catalog)

    def answer(question: str, chain: list[str], address: bytes) -> None:
        flow = tflow.tdnsflow(resp=True)
        flow.request.questions[0].name = question
        assert flow.response is not None
        names = [question, *chain]
        flow.response.answers = [
            ResourceRecord(owner, 5, 1, 300, b"".join(
                bytes([len(label)]) + label.encode() for label in target.split(".")) + b"\0")
            for owner, target in itertools.pairwise(names)
        ] + [ResourceRecord(names[-1], 1, 1, 300, address)]  # fmt: skip
        policy.dns_request(flow)
        asyncio.run(policy.dns_response(flow))

    answer("cdn.pupil.example", ["up9.chat.example"], bytes([198, 51, 100, 101]))
    answer("two.pupil.example", ["x7.pupil.example", "u7.chat.example"], bytes([198, 51, 100, 102]))
    answer("www.news.example", ["edge.cdn.example"], bytes([203, 0, 113, 5]))
    # the catalogued host is itself a CDN's alias: the address is still given out for it alone
    answer(
        "three.pupil.example", ["up3.chat.example", "e3.cdn.example"], bytes([198, 51, 100, 103])
    )
    assert book.names_for("198.51.100.101") == {"up9.chat.example"}
    assert book.names_for("198.51.100.102") == {"u7.chat.example"}
    assert book.names_for("198.51.100.103") == {"up3.chat.example"}
    assert book.names_for("203.0.113.5") == {"edge.cdn.example", "www.news.example"}
    book.close()


def test_the_resolver_forwards_address_queries_to_see_cname_chains() -> None:
    """mitmproxy's own resolver answers A and AAAA with the asked name alone: the chain was
    never seen (a16 F2, a37 N1). Forwarded, the name servers' answer comes back whole."""
    import asyncio

    from mitmproxy.proxy.mode_specs import ProxyMode
    from mitmproxy.test import taddons, tflow

    from schoolgate.addons.resolver import ForwardingResolver

    resolver = ForwardingResolver()
    with taddons.context(resolver) as context:  # type: ignore[no-untyped-call]
        context.configure(resolver, dns_name_servers=["198.51.100.53"])
        flow = tflow.tdnsflow()
        flow.client_conn.proxy_mode = ProxyMode.parse("dns")
        flow.server_conn.address = None
        asyncio.run(resolver.dns_request(flow))
    assert flow.response is None
    assert flow.server_conn.address == ("198.51.100.53", 53)


def test_a_pupils_name_pointed_at_a_sharing_apps_own_servers_is_not_given_out(
    tmp_path: Path,
) -> None:
    """Adversarial pass a40 F6: a pupil's own name (or nip.io's) with an A record of a sharing
    app's dedicated upload server was given out for it, so the proxy passed a hello naming it
    through unread and the banked upload reached the server (Host routed it). Names on a
    CDN's addresses, and the providers' shared ranges, are given out as before."""
    import asyncio

    from mitmproxy.dns import ResourceRecord
    from mitmproxy.test import tflow

    from schoolgate.addons.resolver import ResolverPolicy
    from schoolgate.endpoints.loader import parse_catalog

    catalog = parse_catalog(
        'apps:\n  chat:\n    hosts: ["*.chat.example"]\n    inspection: full\n'
        "    when_not_inspectable: block_by_sni\n"
        "providers:\n  bigcdn:\n    source: test\n    serves: [chat]\n"
        "    ranges: [203.0.113.128/25]\n"
    )
    book = AddressBook(tmp_path / "b.sqlite")
    policy = ResolverPolicy(NamePolicy(()), book, catalog=catalog)

    def name(text: str) -> bytes:
        return b"".join(bytes([len(label)]) + label.encode() for label in text.split(".")) + b"\0"

    def answer(question: str, *records: tuple[str, str]) -> None:
        """records: (owner, target) for a CNAME, (owner, dotted address) for an A record."""
        flow = tflow.tdnsflow(resp=True)
        flow.request.questions[0].name = question
        assert flow.response is not None
        flow.response.answers = [
            ResourceRecord(owner, 1, 1, 300, bytes(int(x) for x in target.split(".")))
            if target[0].isdigit() else ResourceRecord(owner, 5, 1, 300, name(target))
            for owner, target in records
        ]  # fmt: skip
        policy.dns_request(flow)
        asyncio.run(policy.dns_response(flow))

    dedicated, edge, shared = "198.51.100.60", "198.51.100.61", "203.0.113.130"
    answer("up.chat.example", ("up.chat.example", dedicated))  # the gateway's own resolution
    # ... of the wildcard's apex too (a42 F1: it made the app's own server look shared)
    answer("chat.example", ("chat.example", dedicated))
    answer("img.chat.example", ("img.chat.example", "e9.cdn.example"), ("e9.cdn.example", edge))
    answer("cdn.chat.example", ("cdn.chat.example", shared))
    answer("evil.pupil.example", ("evil.pupil.example", dedicated))
    answer("198-51-100-60.nip.example", ("198-51-100-60.nip.example", dedicated))
    answer("two.pupil.example", ("two.pupil.example", "hop.pupil2.example"),
           ("hop.pupil2.example", dedicated))  # fmt: skip
    answer("mixed.pupil.example", ("mixed.pupil.example", dedicated),
           ("mixed.pupil.example", "198.51.100.70"))  # fmt: skip
    answer("news.example", ("news.example", "e9.cdn.example"), ("e9.cdn.example", edge))
    answer("site.example", ("site.example", shared))
    assert book.names_for(dedicated) == {"up.chat.example", "chat.example"}
    assert book.names_for("198.51.100.70") == {"mixed.pupil.example"}
    assert book.names_for(edge) == {"img.chat.example", "e9.cdn.example", "news.example"}
    assert book.names_for(shared) == {"cdn.chat.example", "site.example"}
    book.close()


def test_the_gateways_own_lookup_books_the_cdn_names_of_a_catalogued_hosts_chain() -> None:
    """Adversarial pass a42 F3: the gateway's own look-up of discord.com gave its addresses
    alone, so an Akamai edge it shares with other sites looked like Discord's own server, and
    those sites were refused as fronting. The chain's CDN names hold the addresses too."""
    import asyncio

    from mitmproxy.dns import DNSMessage, ResourceRecord

    from schoolgate.addons.resolver import cdn_owners

    def name(text: str) -> bytes:
        return b"".join(bytes([len(label)]) + label.encode() for label in text.split(".")) + b"\0"

    class Server(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            query = DNSMessage.unpack(data)
            asked = query.questions[0].name
            reply = query.succeed(
                [ResourceRecord(asked, 5, 1, 300, name("d.edgekey.example")),
                 ResourceRecord("d.edgekey.example", 1, 1, 20, bytes([198, 51, 100, 22]))]
                if asked == "chat.example" else []
            )  # fmt: skip
            self.transport.sendto(reply.packed, addr)

    async def ask() -> tuple[object, object, object]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            chained = await cdn_owners("chat.example", ["127.0.0.1"], port=port)
            bare = await cdn_owners("own.example", ["127.0.0.1"], port=port)
            nobody = await cdn_owners("chat.example", ["127.0.0.1"], timeout_s=0.2, port=9)
        finally:
            transport.close()
        return chained, bare, nobody

    chained, bare, nobody = asyncio.run(ask())
    assert chained == {"d.edgekey.example": ["198.51.100.22"]}
    assert bare == {}
    assert nobody is None  # no answer: nothing known, and no error


def test_a_pupil_name_booked_before_an_apps_server_moved_there_is_forgotten(
    tmp_path: Path,
) -> None:
    """Adversarial pass a42 F6: nip.io names booked while an address served no catalogued host
    kept it "shared" once the app's own server moved onto it, for new pupil names too."""
    from schoolgate.addons.resolver import ResolverPolicy
    from schoolgate.endpoints.loader import parse_catalog

    catalog = parse_catalog(
        'apps:\n  chat:\n    hosts: ["up.chat.example"]\n    inspection: full\n'
        "    when_not_inspectable: block_by_sni\n"
        "providers:\n  bigcdn:\n    source: test\n    serves: [chat]\n"
        "    ranges: [203.0.113.128/25]\n"
    )
    book = AddressBook(tmp_path / "b.sqlite")
    policy = ResolverPolicy(NamePolicy(()), book, catalog=catalog)
    moved, edge = "198.51.100.38", "203.0.113.140"
    book.record("198-51-100-38.nip.example", [moved], 600)  # booked by a pupil, long before
    book.record("site.example", [edge], 600)
    book.record("up.chat.example", [moved, edge], 600)  # the gateway's own look-up, straight
    policy.own_server("up.chat.example", [moved, edge])
    assert book.names_for(moved) == {"up.chat.example"}
    assert book.names_for(edge) == {"up.chat.example", "site.example"}  # a CDN's range: shared
    book.close()


def test_a_pupils_look_up_of_a_moved_catalogued_name_forgets_earlier_bookings(
    tmp_path: Path,
) -> None:
    """Adversarial pass a44 F6: a pupil's name booked at an address kept passing unread after a
    catalogued host moved onto it until the gateway's own 10-minute look-up; for a name under a
    catalogue wildcard (never looked up ahead) it never stopped. A pupil's own look-up of the
    catalogued name, answered straight (no CDN's name between), forgets them now."""
    import asyncio

    from mitmproxy.dns import ResourceRecord
    from mitmproxy.test import tflow

    from schoolgate.addons.resolver import ResolverPolicy
    from schoolgate.endpoints.loader import parse_catalog

    catalog = parse_catalog(
        'apps:\n  chat:\n    hosts: ["*.chat.example"]\n    inspection: full\n'
        "    when_not_inspectable: block_by_sni\n"
    )
    book = AddressBook(tmp_path / "b.sqlite")
    policy = ResolverPolicy(NamePolicy(()), book, catalog=catalog)

    def answer(question: str, address: str) -> None:
        flow = tflow.tdnsflow(resp=True)
        flow.request.questions[0].name = question
        assert flow.response is not None
        flow.response.answers = [
            ResourceRecord(question, 1, 1, 300, bytes(int(x) for x in address.split(".")))
        ]
        policy.dns_request(flow)
        asyncio.run(policy.dns_response(flow))

    moved = "198.51.100.32"
    answer("p32.pupil.example", moved)  # booked while the address served nothing catalogued
    assert book.names_for(moved) == {"p32.pupil.example"}
    answer("content-7.chat.example", moved)  # a pupil asks for the catalogued name
    assert book.names_for(moved) == {"content-7.chat.example"}
    answer("p33.pupil.example", moved)  # and a new pupil name there is not given out
    assert book.names_for(moved) == {"content-7.chat.example"}
    book.close()


def test_unchecked_domain_fronting_is_said(tmp_path: Path) -> None:
    """a80 F1: with the resolver off, a pupil reached a catalogued upload host under another
    server name, uninspected, and nothing said so."""
    now = [1000.0]
    book = AddressBook(tmp_path / "f.sqlite", min_ttl_s=600, clock=lambda: now[0])
    try:
        assert "resolver.enabled: true" in (fronting_unchecked(True, True, None) or "")
        assert "no answer" in (fronting_unchecked(True, True, book) or "")
        book.record("api.imgur.com", ["198.51.100.7"], ttl_s=60)
        assert book.live() == 1
        assert fronting_unchecked(True, True, book) is None
        now[0] += 700  # past the minimum: the resolver stopped renewing its answers
        assert book.live() == 0
        assert fronting_unchecked(True, True, book) is not None
        assert fronting_unchecked(True, False, None) is None  # sni_mismatch: pass, by choice
        assert fronting_unchecked(False, True, None) is None  # an explicit proxy: no resolver
    finally:
        book.close()


def test_check_config_says_when_domain_fronting_is_not_checked(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from schoolgate.cli.app import main

    gateway = "mode: transparent, listen_host: 0.0.0.0"
    for text, said in (
        (f"proxy: {{{gateway}}}\n", True),
        (f"proxy: {{{gateway}}}\nresolver: {{enabled: true}}\n", False),
        (f"proxy: {{{gateway}, sni_mismatch: pass}}\n", False),
    ):
        config = tmp_path / "site.yaml"
        config.write_text(text)
        assert main(["check-config", str(config)]) == 0
        assert ("domain fronting is not checked" in capsys.readouterr().out) == said
