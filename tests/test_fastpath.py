"""The fast path's groundwork: the catalog's provider ranges, the ruleset's sets and rules, and
how the resolver's answers are sorted into them (issue 20). The scripts are loaded into a real
nftables in a network namespace of their own (`unshare --net`), so their syntax is nft's."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from schoolgate.config import Config, parse_config
from schoolgate.endpoints.loader import load_catalog, parse_catalog
from schoolgate.errors import ConfigError
from schoolgate.gateway.fastpath import (
    CATALOGUED_MIN_S,
    FAST_MAX_S,
    FAST_MIN_S,
    FAST_PER_DEVICE,
    FastPathSets,
    catalogued_names,
    ready_check_args,
    stop_script,
)
from schoolgate.gateway.nft import GatewayRuleset
from tests.support.alert_helpers import FakeClock

GATEWAY = """
proxy: {mode: transparent, listen_host: 0.0.0.0}
gateway: {student_interfaces: [wlan0], fast_path: %s}
resolver: {enabled: %s}
"""
CATALOG = """
providers:
  sharedcdn:
    source: "a test provider"
    serves: [chat]
    ranges: [203.0.113.128/25, "2001:db8:cd::/48"]
apps:
  chat:
    hosts: [chat.example, "*.chat.example"]
    inspection: full
    when_not_inspectable: block_by_sni
"""


def gateway_config(fast_path: bool = True, resolver: bool = True) -> Config:
    return parse_config(GATEWAY % (str(fast_path).lower(), str(resolver).lower()), "test.yaml")


# -- the catalog's providers -----------------------------------------------------------------


def test_the_packaged_catalog_carries_the_shared_providers_with_their_sources() -> None:
    providers = load_catalog().providers
    names = {p.name for p in providers.providers}
    assert {"cloudflare", "google", "meta", "fastly", "apple"} <= names
    assert all(p.source for p in providers.providers)
    assert providers.covers("104.16.0.1")  # Cloudflare (Discord)
    assert providers.covers("157.240.1.1")  # Meta (Instagram)
    assert providers.covers("::ffff:157.240.1.1")  # the same, IPv4-mapped
    assert providers.covers("2a03:2880::1")
    assert not providers.covers("192.0.2.10")
    assert not providers.covers("not an address")


def test_a_school_replaces_or_removes_a_provider_and_bad_ranges_are_named(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("providers:\n  cloudflare: {enabled: false}\n"
                    "  ours: {source: here, ranges: [198.51.100.0/24]}\n")  # fmt: skip
    providers = load_catalog([site]).providers
    assert not providers.covers("104.16.0.1")
    assert providers.covers("198.51.100.7")
    for ranges, problem in (("[0.0.0.0/0]", "wider than any provider"),
                            ("[198.51.100.1/24]", "not a range"),
                            ("[]", "non-empty list")):  # fmt: skip
        site.write_text(f"providers:\n  ours: {{source: here, ranges: {ranges}}}\n")
        with pytest.raises(ConfigError, match=problem) as caught:
            load_catalog([site])
        assert "providers.ours.ranges" in str(caught.value)


# -- the ruleset -------------------------------------------------------------------------------


def test_a_fast_path_syn_loses_the_options_that_change_what_a_server_reads() -> None:
    """Adversarial passes a23 (Fast Open: a cookie, then a hello in a SYN, refused) and a24
    (multipath TCP: the server read the catalogued hello over the one the check had read).
    Every copy is cleared from any SYN of a pending, named or verified connection."""
    bare = GatewayRuleset(gateway_config()).render().split("chain fast_bare {")[1]
    bare = bare.split("\n\t}")[0]
    syn = ("ct mark { 0x53470001, 0x53470004, 0x53470002 } ct direction original tcp flags & "
           "(syn | ack) == syn")  # fmt: skip
    for kind in ("fastopen", "mptcp", "254"):
        assert bare.count(f"{syn} reset tcp option {kind}\n") == 2, kind
        assert f'{syn} tcp option {kind} exists counter drop comment "fast path SYN option"' in bare
    assert bare.rindex("SYN option") < bare.index("reopened") < bare.index("jump fast_bare")


def test_the_fast_path_is_in_the_ruleset_only_with_the_resolver_and_the_switch() -> None:
    text = GatewayRuleset(gateway_config()).render()
    assert 'comment "fast path"' in text
    assert ("tcp dport 443 tcp flags & (syn | ack) == syn meta l4proto @fast_ready ip daddr "
            "@fast_v4 ip daddr != @catalogued_v4 "
            "ip daddr != @withdrawn_v4 ip daddr != @providers_v4") in text  # fmt: skip
    assert "dport { 80, 443 } meta l4proto @fast_ready" not in text  # plain HTTP: the proxy's
    assert "meta l4proto @fast_ready" in text
    # a pending connection's bare SYNs and ACKs are marked read before iptables' queue rules
    # (priority mangle) see them; only header lengths that leave no room for data qualify
    bare = text.split("chain fast_bare {")[1].split("\n\t}")[0]
    assert "priority mangle - 10;" in bare
    # a SYN on a named or verified connection (conntrack reopened it: a18 Y1c) is pending again
    assert ("ct mark { 0x53470004, 0x53470002 } ct direction original tcp flags & (syn | ack | "
            "fin | rst) == syn ct mark set 0x53470001 counter return") in bare  # fmt: skip
    assert bare.index("reopened") < bare.index("jump fast_bare_segments")
    assert (
        "ct mark { 0x53470001, 0x53470004 } ct direction original jump fast_bare_segments" in bare
    )
    # a named connection's server's bare ACKs too (its answer, read, acknowledges the hello)
    assert ("ct mark 0x53470004 ct direction reply tcp flags == ack ip hdrlength 5 ip length 52 "
            "@th,96,4 8 meta mark set 0x53470011 counter") in bare  # fmt: skip
    assert bare.count("server's bare ACK") == 4
    segments = text.split("chain fast_bare_segments {")[1].split("\n\t}")[0]
    assert "tcp flags == ack ip hdrlength 5 ip length 52 @th,96,4 8 meta mark set 0x53470011" in (
        segments
    )
    assert "tcp flags == syn ip6 nexthdr tcp ip6 length 40 @th,96,4 10 meta mark" in segments
    assert segments.count("meta mark set 0x53470011") == 10
    # any other SYN on a named or verified connection is dropped, whatever conntrack makes of it
    assert ("ct mark { 0x53470004, 0x53470002 } ct direction original tcp flags & syn == syn "
            'counter drop comment "fast path odd SYN"') in bare  # fmt: skip
    assert bare.index("reopened") < bare.index("odd SYN")
    # the fast path comes before the proxy's redirect and after the own-address rule
    assert text.index('"own address"') < text.index('"fast path"') < text.index('"proxy"')
    for off in (gateway_config(fast_path=False), gateway_config(resolver=False)):
        rendered = GatewayRuleset(off).render()
        assert "@fast" not in rendered
        assert "set fast" not in rendered
        # only the rule that cuts connections a fast path let through before it was switched off
        assert [line.strip() for line in rendered.splitlines() if "fast" in line] == [
            "ct mark { 0x53470001, 0x53470002, 0x53470003, 0x53470004 } counter reject with tcp "
            "reset "
            'comment "fast path off"'
        ]


nft_available = pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None, reason="needs nft and unshare"
)


def nft_in_fresh_netns(
    tmp_path: Path, *scripts: str, then: str = ""
) -> subprocess.CompletedProcess[str]:
    """Load the scripts in order into a network namespace of their own, then run `then`."""
    paths = []
    for number, script in enumerate(scripts):
        path = tmp_path / f"{number}.nft"
        path.write_text(script)
        paths.append(f"nft -f {path}")
    command = " && ".join([*paths, *([then] if then else [])])
    return subprocess.run(["unshare", "--net", "sh", "-c", command], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@nft_available
def test_the_ruleset_and_the_resolvers_scripts_load_into_nftables(tmp_path: Path) -> None:
    ruleset = GatewayRuleset(gateway_config()).render()
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    sets.answered(["news.example"], ["192.0.2.80", "2001:db8:1::80"], 60)
    sets.answered(["chat.example"], ["198.51.100.7"], 60)
    sets.withdraw("203.0.113.9")
    listed = nft_in_fresh_netns(tmp_path, ruleset, sets.pending_script(),
                                then="nft list table inet schoolgate")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "192.0.2.80" in listed.stdout.split("set fast_v4")[1].split("}")[0]
    assert "2001:db8:1::80" in listed.stdout.split("set fast_v6")[1].split("}")[0]
    assert "198.51.100.7" in listed.stdout.split("set catalogued_v4")[1].split("}")[0]
    assert "203.0.113.9" in listed.stdout.split("set withdrawn_v4")[1].split("}")[0]
    # Re-arming an element that exists, and the restate after a reload, load as well.
    sets.answered(["news.example"], ["192.0.2.80"], 60)
    clock.advance(FAST_MIN_S)
    sets.answered(["news.example"], ["192.0.2.80"], 60)
    again = nft_in_fresh_netns(tmp_path, ruleset, sets.pending_script(), sets.pending_script(),
                               sets.restate_script(), sets.restate_script())  # fmt: skip
    assert again.returncode == 0, again.stderr


@nft_available
def test_the_heartbeat_can_be_checked_and_stopping_ends_the_fast_path(tmp_path: Path) -> None:
    ruleset = GatewayRuleset(gateway_config()).render()
    check = "nft " + " ".join(f"'{arg}'" if " " in arg else arg for arg in ready_check_args())
    absent = nft_in_fresh_netns(tmp_path, ruleset, then=check)
    assert absent.returncode != 0  # a fresh ruleset: no heartbeat, no fast path
    sets = FastPathSets(parse_catalog(CATALOG))
    present = nft_in_fresh_netns(tmp_path, ruleset, sets.pending_script(), then=check)
    assert present.returncode == 0, present.stderr
    stopped = nft_in_fresh_netns(tmp_path, ruleset, sets.pending_script(), stop_script(),
                                 then=check)  # fmt: skip
    assert stopped.returncode != 0


# -- sorting answers ---------------------------------------------------------------------------


def test_answers_are_sorted_by_every_name_in_the_chain() -> None:
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    assert sets.answered(["news.example", "edge.cdn.example"], ["192.0.2.80"], 30)
    # web.chat.example CNAME'd to a CDN name that the catalog does not know: still catalogued
    assert sets.answered(["web.chat.example", "chat.edge.cdn.example"], ["192.0.2.90"], 30)
    script = sets.pending_script()
    assert f"fast_v4 {{ 192.0.2.80 timeout {FAST_MIN_S}s }}" in script
    assert f"catalogued_v4 {{ 192.0.2.90 timeout {CATALOGUED_MIN_S}s }}" in script
    assert "fast_ready { tcp timeout 30s }" in script
    assert sets.sizes() == (1, 1)


def test_a_pupils_own_name_for_a_catalogued_address_opens_no_fast_path() -> None:
    sets = FastPathSets(parse_catalog(CATALOG), clock=FakeClock(start=1000.0))
    sets.answered(["chat.example"], ["192.0.2.90"], 300)
    sets.pending_script()
    assert not sets.answered(["my-own-domain.example"], ["192.0.2.90"], 300)
    assert "fast_v4" not in sets.pending_script()


def test_provider_ranges_loopback_and_link_local_never_join_the_fast_set() -> None:
    sets = FastPathSets(parse_catalog(CATALOG), clock=FakeClock(start=1000.0))
    assert not sets.answered(["pupil.example"], ["203.0.113.200", "2001:db8:cd::5", "127.0.0.1",
                                                 "169.254.1.1", "fe80::1", "0.0.0.0", "nonsense"],
                             300)  # fmt: skip
    assert sets.sizes() == (0, 0)


def test_lifetimes_follow_the_ttl_within_bounds_and_repeats_are_not_rewritten() -> None:
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    sets.answered(["a.example"], ["192.0.2.1"], 5)
    sets.answered(["b.example"], ["192.0.2.2"], 2_000)
    sets.answered(["c.example"], ["192.0.2.3"], 999_999)
    script = sets.pending_script()
    assert f"192.0.2.1 timeout {FAST_MIN_S}s" in script
    assert "192.0.2.2 timeout 2000s" in script
    assert f"192.0.2.3 timeout {FAST_MAX_S}s" in script
    assert not sets.answered(["b.example"], ["192.0.2.2"], 2_000)  # still fresh: nothing to write
    clock.advance(1_500)  # past half its lifetime: re-armed
    assert sets.answered(["b.example"], ["192.0.2.2"], 2_000)


def test_a_restate_after_a_reload_writes_what_is_still_valid() -> None:
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    sets.answered(["a.example"], ["192.0.2.1"], 300)
    sets.answered(["chat.example"], ["192.0.2.90"], 300)
    sets.pending_script()
    clock.advance(400)  # the fast entry (300 s) lapsed, the catalogued one (3600 s) did not
    script = sets.restate_script()
    assert "192.0.2.1" not in script
    assert "catalogued_v4 { 192.0.2.90 timeout 3200s }" in script
    assert sets.sizes() == (0, 1)


def test_the_gateway_resolves_the_catalogs_exact_names_and_the_wildcards_domains() -> None:
    names = catalogued_names(parse_catalog(CATALOG))
    assert names == ["chat.example", "www.chat.example"]
    assert len(catalogued_names(load_catalog())) > 100


def test_named_upload_hosts_under_a_wildcard_are_resolved_ahead_too() -> None:
    """Adversarial pass a34: content.dropboxapi.com, catalogued by `*.dropboxapi.com` only, was
    never resolved ahead, so its addresses were the proxy's only once a pupil asked for it."""
    route = "    upload_routes: [{method: POST, path: /u, hosts: [media.chat.example], body: raw}]"
    extra = f"    resolve: [upload.chat.example]\n{route}\n    inspection: full"
    names = catalogued_names(parse_catalog(CATALOG.replace("    inspection: full", extra)))
    assert names == [
        "chat.example",
        "media.chat.example",
        "upload.chat.example",
        "www.chat.example",
    ]
    assert "content.dropboxapi.com" in catalogued_names(load_catalog())
    foreign = CATALOG.replace(
        "    inspection: full", "    resolve: [other.example]\n    inspection: full"
    )
    with pytest.raises(ConfigError, match="not a name under the app's wildcard"):
        parse_catalog(foreign)


def test_a_withdrawn_address_leaves_the_fast_path_and_stays_out() -> None:
    """The first flight of a connection to it named a catalogued server (or none, or was not
    TLS): later answers naming it do not put it back until the withdrawal ends."""
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    assert sets.answered(["pupil.example"], ["192.0.2.66"], 60)
    sets.pending_script()
    assert sets.withdraw("192.0.2.66")
    assert not sets.withdraw("192.0.2.66")  # already out: nothing new to write
    assert f"withdrawn_v4 {{ 192.0.2.66 timeout {FAST_MAX_S}s }}" in sets.pending_script()
    clock.advance(FAST_MIN_S + 1)
    assert not sets.answered(["pupil.example"], ["192.0.2.66"], 60)
    assert "withdrawn_v4 { 192.0.2.66 timeout" in sets.restate_script()
    assert not sets.withdraw("not an address")
    clock.advance(FAST_MAX_S)
    assert sets.answered(["pupil.example"], ["192.0.2.66"], 60)


def test_one_device_adds_at_most_its_share_of_fast_addresses() -> None:
    """Adversarial pass a16 F6: one device's flood of names, each answered with many addresses,
    filled the fast set, and every write failed from then on. Past its share, a device's new
    addresses meet the proxy; another device's do not, and the share comes back as they lapse."""
    clock = FakeClock(start=1000.0)
    sets = FastPathSets(parse_catalog(CATALOG), clock=clock)
    flood = [str(ipaddress.IPv6Address("2001:db8:f::") + n) for n in range(FAST_PER_DEVICE + 50)]
    for start in range(0, len(flood), 16):
        sets.answered([f"n{start}.flood.example"], flood[start : start + 16], 300, "aa:bb")
    assert sets.sizes()[0] == FAST_PER_DEVICE
    assert sets.capped == 50
    assert sets.answered(["news.example"], ["192.0.2.80"], 300, "cc:dd")  # another device
    # an address already fast is refreshed for anyone, over the share
    clock.advance(200)
    assert sets.answered(["again.flood.example"], [flood[0]], 300, "aa:bb")
    clock.advance(FAST_MIN_S)  # the flood's addresses lapse
    assert sets.answered(["late.flood.example"], ["192.0.2.99"], 300, "aa:bb")


def test_all_devices_together_never_fill_the_kernels_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import schoolgate.gateway.fastpath as fastpath

    monkeypatch.setattr(fastpath, "FAST_CAPACITY", 40)
    sets = FastPathSets(parse_catalog(CATALOG), clock=FakeClock(start=1000.0))
    for device in range(5):
        addresses = [f"192.0.2.{10 * device + n}" for n in range(10)]
        sets.answered([f"d{device}.example"], addresses, 300, f"device-{device}")
    assert sets.sizes()[0] == 40
    assert sets.capped == 10


def test_a_failed_write_leaves_the_service_and_the_kernel_together() -> None:
    """a16 F6: after a failed write the service believed an address fast (and did not write
    it again for half its lifetime) that the kernel never had; a catalogued address it failed
    to write was never excluded."""
    sets = FastPathSets(parse_catalog(CATALOG), clock=FakeClock(start=1000.0))
    sets.answered(["news.example"], ["192.0.2.80"], 300, "aa:bb")
    sets.answered(["chat.example"], ["192.0.2.90"], 300)
    sets.pending_script()
    sets.unwritten()  # the write failed
    retried = sets.pending_script()
    assert "catalogued_v4 { 192.0.2.90" in retried  # written again at the next write
    assert "fast_v4" not in retried
    assert sets.answered(["news.example"], ["192.0.2.80"], 300, "aa:bb")  # added afresh
    assert "fast_v4 { 192.0.2.80" in sets.pending_script()
