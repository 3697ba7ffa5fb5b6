"""Bank distribution for a trust (issue 21): the central box publishes signed bundles, each
gateway verifies and applies them, and refuses what it should, keeping its last good banks."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schoolgate.banks.model import BankError, SignalInput, SignalType
from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import (
    MAGIC,
    BundleError,
    generate_key,
    open_bundle,
    parse_public_key,
    public_key_text,
)
from schoolgate.trust.publish import INDEX, publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import Subscription
from schoolgate.trust.subscribe import FetchError, sync


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@dataclass
class Trust:
    """A central box (its own bank store and publication folder) and one gateway."""

    central: BankStore
    out: Path
    gateway: BankStore
    key: Ed25519PrivateKey
    clock: Clock = field(default_factory=Clock)
    served: dict[str, bytes] | None = None  # what the web server serves, when not `out`
    fetched: list[str] = field(default_factory=list)

    def publish(self, *banks: str, with_features: bool = False, drop: tuple[str, ...] = ()) -> int:
        done = publish(
            self.central,
            self.out,
            self.key,
            channel="trust",
            drop=drop,
            publisher="Test Trust",
            banks=banks or ("trust-incidents",),
            with_features=with_features,
            clock=self.clock,
        )
        return done.version

    def fetch(self, subscription: Subscription, file: str) -> bytes:
        self.fetched.append(file)
        if self.served is not None:
            if file not in self.served:
                raise FetchError(f"{file}: 404")
            return self.served[file]
        path = self.out / file
        if not path.exists():
            raise FetchError(f"{file}: 404")
        return path.read_bytes()

    def subscription(self, key: Ed25519PrivateKey | None = None) -> Subscription:
        public = (key or self.key).public_key()
        return Subscription("trust", "https://trust.example/banks/", public, "trust")

    def sync(self, key: Ed25519PrivateKey | None = None) -> str:
        return sync(self.subscription(key), Replica(self.gateway, self.clock), self.fetch).outcome

    def blocked(self, text: str) -> bool:
        return any(s.value == sha(text) for s in self.gateway.iter_signals())


@pytest.fixture
def trust(tmp_path: Path) -> Iterator[Trust]:
    with (
        BankStore(tmp_path / "central.sqlite") as central,
        BankStore(tmp_path / "gateway.sqlite") as gateway,
    ):
        central.create_bank("trust-incidents", "shared incident hashes", "Test Trust")
        central.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha("one"))], "dsl")
        yield Trust(central, tmp_path / "published", gateway, generate_key())


def test_a_published_hash_reaches_the_gateway_and_later_changes_follow(trust: Trust) -> None:
    first = trust.publish()
    assert trust.sync() == "updated"
    assert trust.blocked("one")
    assert Replica(trust.gateway).state("trust").version == first  # type: ignore[union-attr]
    assert trust.sync() == "current"  # nothing new: only the index is fetched
    trust.fetched.clear()
    trust.central.add_signals(
        "trust-incidents", [SignalInput(SignalType.SHA256, sha("two"))], "dsl"
    )
    trust.central.remove_signal("trust-incidents", SignalType.SHA256, sha("one"))
    second = trust.publish()
    assert second > first
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"delta-{first}-{second}.sgb"]  # one delta, not the whole
    assert trust.blocked("two")
    assert not trust.blocked("one")
    bank = trust.gateway.bank("trust-incidents")
    assert bank.description == "shared incident hashes"
    assert bank.source.startswith(f"subscription trust v{second}")


def test_a_gateway_offline_for_many_publications_catches_up(trust: Trust) -> None:
    trust.publish()
    assert trust.sync() == "updated"
    for n in range(12):  # more than the deltas kept: the full snapshot
        trust.central.add_signals(
            "trust-incidents", [SignalInput(SignalType.SHA256, sha(f"{n}"))], "dsl"
        )
        latest = trust.publish()
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"full-{latest}.sgb"]
    assert all(trust.blocked(f"{n}") for n in range(12))
    assert len(list(trust.out.glob("full-*.sgb"))) == 10  # older snapshots pruned


def test_a_bank_no_longer_published_leaves_the_gateway(trust: Trust) -> None:
    trust.central.create_bank("trust-extra")
    trust.central.add_signals("trust-extra", [SignalInput(SignalType.MD5, "0" * 32)], "x")
    trust.publish("trust-incidents", "trust-extra")
    trust.sync()
    assert {b.name for b in trust.gateway.banks()} == {"trust-incidents", "trust-extra"}
    # left out by mistake: refused (a26 D1: the docs' own example dropped a shared bank)
    with pytest.raises(BankError, match="name them again, or --drop"):
        trust.publish("trust-incidents")
    trust.publish("trust-incidents", drop=("trust-extra",))
    trust.sync()
    assert {b.name for b in trust.gateway.banks()} == {"trust-incidents"}


@pytest.mark.parametrize("attack", ["tampered", "truncated", "unsigned", "other_key"])
def test_a_bad_bundle_is_refused_and_the_last_good_banks_stay(trust: Trust, attack: str) -> None:
    trust.publish()
    trust.sync()
    trust.central.add_signals(
        "trust-incidents", [SignalInput(SignalType.SHA256, sha("new"))], "dsl"
    )
    trust.central.remove_signal("trust-incidents", SignalType.SHA256, sha("one"))
    version = trust.publish()
    served = {p.name: p.read_bytes() for p in trust.out.glob("*.sgb")}
    delta = next(name for name in served if name.startswith("delta-"))
    if attack == "tampered":  # one byte of the delta's compressed body
        data = bytearray(served[delta])
        data[-10] ^= 0x01
        served[delta] = bytes(data)
    elif attack == "truncated":
        served[delta] = served[delta][: len(served[delta]) // 2]
    elif attack == "unsigned":
        served[INDEX] = MAGIC + bytes(64) + served[INDEX][len(MAGIC) + 64 :]
    else:  # a publisher of its own, with its own key, serving at the trust's address
        other = generate_key()
        with BankStore(trust.out.parent / "other.sqlite") as rogue:
            rogue.create_bank("trust-incidents")
            publish(
                rogue,
                trust.out.parent / "rogue",
                other,
                publisher="Test Trust",
                channel="trust",
                banks=["trust-incidents"],
                clock=Clock(trust.clock.now + 100),
            )
        served = {p.name: p.read_bytes() for p in (trust.out.parent / "rogue").glob("*.sgb")}
    trust.served = served
    assert trust.sync() == "refused"
    assert trust.blocked("one")  # the last good banks
    assert not trust.blocked("new")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.version != version
    assert sum(state.refusals.values()) == 1
    assert state.last_error


def test_an_older_bundle_served_again_is_refused(trust: Trust) -> None:
    trust.publish()
    old = {p.name: p.read_bytes() for p in trust.out.glob("*.sgb")}
    trust.central.remove_signal("trust-incidents", SignalType.SHA256, sha("one"))
    trust.publish()
    assert trust.sync() == "updated"
    assert not trust.blocked("one")
    trust.served = old  # a mirror, or an attacker, serves the old publication
    assert trust.sync() == "refused"
    assert not trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"replayed": 1}


def test_a_bundle_cannot_take_over_a_schools_own_bank(trust: Trust) -> None:
    trust.gateway.create_bank("trust-incidents", "this school's own")
    trust.gateway.add_signals(
        "trust-incidents", [SignalInput(SignalType.SHA256, sha("ours"))], "dsl"
    )
    trust.central.create_bank("trust-extra")
    trust.central.add_signals("trust-extra", [SignalInput(SignalType.SHA256, sha("two"))], "x")
    trust.publish("trust-incidents", "trust-extra")
    # a28 P3: the clashing bank is withheld, the rest applied (one clash froze everything)
    assert trust.sync() == "updated"
    assert trust.blocked("ours")
    assert not trust.blocked("one")
    assert trust.blocked("two")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"clash": 1}
    assert state.withheld == ("trust-incidents",)
    assert state.banks == ("trust-extra",)
    assert "trust-incidents" in state.last_error
    # while the clash stands, the same version is not fetched again
    assert trust.sync() == "current"
    # once the school renames its bank, the next sync brings the trust's whole, at the same
    # version (a30 W1: it waited for the next publication)
    trust.gateway.delete_bank("trust-incidents")
    trust.gateway.create_bank("our-incidents", "this school's own, renamed")
    trust.gateway.add_signals("our-incidents", [SignalInput(SignalType.SHA256, sha("ours"))], "d")
    assert trust.sync() == "updated"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.withheld == ()
    # and later publications are deltas again, as a full snapshot applied without a clash
    trust.central.add_signals("trust-extra", [SignalInput(SignalType.SHA256, sha("three"))], "x")
    latest = trust.publish("trust-incidents", "trust-extra")
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched[-1].startswith("delta-")
    assert trust.fetched[-1].endswith(f"-{latest}.sgb")
    assert trust.blocked("three")
    assert trust.blocked("ours")


def test_a_full_snapshot_that_leaves_a_bank_out_unnamed_is_refused(
    trust: Trust, tmp_path: Path
) -> None:
    """Adversarial pass a28 X1b: a second folder of the same channel (a staging copy, a
    recreated folder) published a newer snapshot without one of the trust's banks, and the
    gateway dropped it. A full snapshot names every bank the folder dropped on purpose."""
    trust.central.create_bank("trust-extra")
    trust.central.add_signals("trust-extra", [SignalInput(SignalType.SHA256, sha("two"))], "x")
    trust.publish("trust-incidents", "trust-extra")
    assert trust.sync() == "updated"
    copy = tmp_path / "second-www"  # a copy of the folder: its token too
    copy.mkdir()
    (copy / "folder.id").write_bytes((trust.out / "folder.id").read_bytes())
    with BankStore(tmp_path / "second.sqlite") as second:
        second.create_bank("trust-extra")
        done = publish(second, copy, trust.key, publisher="Test Trust",
                       channel="trust", banks=["trust-extra"], clock=trust.clock)  # fmt: skip
    trust.served = {p.name: p.read_bytes() for p in copy.glob("*.sgb")}
    assert trust.sync() == "refused"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    # a35 F3: its lineage starts after the version applied, so it is refused as a fork first
    assert state.refusals == {"fork": 1}
    # and its snapshot, were it let through, is refused for the bank it leaves out unnamed
    full = open_bundle((copy / f"full-{done.version}.sgb").read_bytes(), trust.key.public_key())
    with pytest.raises(BundleError, match=r"leaves out bank\(s\) trust-incidents") as refused:
        Replica(trust.gateway).apply("trust", full)
    assert refused.value.reason == "shrunk"
    assert trust.blocked("one")
    # a bank dropped on purpose leaves, and a gateway that was offline then still knows why
    trust.served = None
    trust.publish("trust-extra", drop=("trust-incidents",))
    trust.central.add_signals("trust-extra", [SignalInput(SignalType.SHA256, sha("3"))], "x")
    trust.publish("trust-extra")
    assert trust.sync() == "updated"
    assert not trust.blocked("one")
    assert trust.blocked("3")


def test_another_folder_of_the_channel_is_refused_until_repinned(
    trust: Trust, tmp_path: Path
) -> None:
    """Adversarial pass a30 N1, N2: a second box with an older database (every bank name,
    fewer hashes), or a staging folder that once dropped a bank, published the trust's channel
    with the trust's key, and a mirror served it. A gateway follows the folder it first
    applied; a move on purpose is one command on each gateway."""
    trust.publish()
    assert trust.sync() == "updated"
    with BankStore(tmp_path / "older.sqlite") as older:
        older.create_bank("trust-incidents")  # the same name, none of the hashes
        publish(older, tmp_path / "older-www", trust.key, publisher="Test Trust",
                channel="trust", banks=["trust-incidents"], clock=trust.clock)  # fmt: skip
    trust.served = {p.name: p.read_bytes() for p in (tmp_path / "older-www").glob("*.sgb")}
    assert trust.sync() == "refused"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"folder": 1}
    assert "--repin trust" in state.last_error
    assert Replica(trust.gateway).repin("trust")
    assert trust.sync() == "updated"  # followed on purpose now
    assert not trust.blocked("one")


@pytest.mark.parametrize(
    ("drop", "error"),
    [
        (("trust-incidents",), "published and dropped at once"),
        (("trust-extar",), "not in the last publication"),
    ],
    ids=["both", "misspelt"],
)
def test_a_drop_must_name_a_bank_the_folder_published(
    trust: Trust, drop: tuple[str, ...], error: str
) -> None:
    trust.publish()
    with pytest.raises(BankError, match=error):
        trust.publish("trust-incidents", drop=drop)


def test_a_version_far_in_the_future_is_refused(trust: Trust) -> None:
    """Adversarial pass a30 N2s: a publication from a box whose clock was a year ahead made
    every real one after it look replayed, for a year."""
    trust.publish()
    assert trust.sync() == "updated"
    trust.clock.now += 365 * 86400
    trust.publish()
    trust.clock.now -= 365 * 86400
    assert trust.sync() == "refused"
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"future": 1}
    assert trust.blocked("one")


def test_a_delta_the_server_lost_is_replaced_by_the_full_snapshot(trust: Trust) -> None:
    first = trust.publish()
    trust.sync()
    trust.central.add_signals("trust-incidents", [SignalInput(SignalType.SHA256, sha("2"))], "x")
    latest = trust.publish()
    (trust.out / f"delta-{first}-{latest}.sgb").unlink()
    trust.fetched.clear()
    assert trust.sync() == "updated"
    assert trust.fetched == [INDEX, f"delta-{first}-{latest}.sgb", f"full-{latest}.sgb"]
    assert trust.blocked("2")


def test_the_server_down_keeps_the_banks_and_says_so(trust: Trust) -> None:
    """And counts it, apart from refusals: a gateway that asks and gets nothing is seen by its
    last good sync (alert SchoolgateTrustSyncFailing; a30 monitoring)."""
    trust.publish()
    trust.sync()
    synced = Replica(trust.gateway).state("trust")
    assert synced is not None
    assert synced.synced_at is not None
    assert synced.fetch_failures == 0
    trust.served = {}
    trust.clock.now += 900
    assert trust.sync() == "unreachable"
    trust.clock.now += 900
    assert trust.sync() == "unreachable"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.fetch_failures == 2
    assert state.refusals == {}
    assert state.synced_at == synced.synced_at
    assert state.checked_at is not None
    assert state.checked_at > synced.synced_at + 1800


def test_feature_sets_travel_only_when_the_trust_opts_in(trust: Trust) -> None:
    trust.central.add_features("trust-incidents", "item-1", "orb-test", [("whole", b"\x01\x02")])
    hashes_only = publish(trust.central, trust.out, trust.key, channel="trust", publisher="T",
                          banks=("trust-incidents",), clock=trust.clock)  # fmt: skip
    # a38 T1: the operator is told what the schools then do not match
    assert any("feature sets not published (trust-incidents: 1 items)" in w
               and "cropped" in w for w in hashes_only.warnings)  # fmt: skip
    trust.sync()
    assert trust.gateway.feature_counts() == {}
    trust.publish(with_features=True)
    trust.sync()
    assert trust.gateway.feature_counts() == {"trust-incidents": 1}
    assert next(iter(trust.gateway.iter_features("orb-test")))[3] == b"\x01\x02"


def test_the_publisher_key_round_trips_through_its_text_form() -> None:
    key = generate_key()
    text = public_key_text(key.public_key())
    assert text.startswith("ed25519:")
    assert parse_public_key(text).public_bytes_raw() == key.public_key().public_bytes_raw()
    for bad in ("", "ed25519:", "ed25519:abc", "rsa:" + text[8:]):
        with pytest.raises(ValueError, match="not a publisher key"):
            parse_public_key(bad)


def test_a_bundle_is_read_only_after_its_signature_verifies(tmp_path: Path) -> None:
    """A bomb or a malformed body from anyone but the publisher is never decompressed."""
    key = generate_key()
    with pytest.raises(BundleError) as refused:
        open_bundle(MAGIC + bytes(64) + b"\x1f\x8b" + b"\x00" * 100, key.public_key())
    assert refused.value.reason == "signature"
    with pytest.raises(BundleError) as refused:
        open_bundle(b"<html>404</html>", key.public_key())
    assert refused.value.reason == "malformed"


def test_the_running_proxy_keeps_its_subscriptions_current(
    trust: Trust, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy's addon syncs each subscription at start (and every interval_s), and says
    when a bank setting misses a trust bank under its prefixed name (a43 F8)."""
    import asyncio
    import time
    from types import SimpleNamespace

    from schoolgate.addons.runtime import RuntimeRef
    from schoolgate.addons.subscriptions import BankSubscriptions
    from schoolgate.matching.settings import BanksConfig

    trust.clock.now = time.time()  # the addon's replica keeps the real time
    trust.publish()
    subscription = Subscription(
        "trust", f"file://{trust.out}/", trust.key.public_key(), "trust", prefix="north-"
    )
    banks = BanksConfig(
        tmp_path / "proxy.sqlite",
        tiers={"trust-*": ("pdq", "robust"), "*": ("pdq",)},
        subscriptions=(subscription,),
    )
    ref = RuntimeRef(SimpleNamespace(config=SimpleNamespace(banks=banks), closed=False))  # type: ignore[arg-type]

    async def until_applied() -> None:
        addon = BankSubscriptions(ref)
        addon.running()
        try:
            for _ in range(100):  # 10 s at most
                await asyncio.sleep(0.1)
                with BankStore(banks.path) as store:
                    applied = any(b.name == "north-trust-incidents" for b in store.banks())
                if applied and any("banks.tiers" in r.getMessage() for r in caplog.records):
                    return
            raise AssertionError("the subscription was never applied")
        finally:
            addon.done()

    asyncio.run(until_applied())
    said = [r.getMessage() for r in caplog.records if "banks.tiers" in r.getMessage()]
    assert said == [
        "schoolgate banks: banks.tiers 'trust-*': the trust bank 'trust-incidents' is "
        "'north-trust-incidents' here (trust's prefix), so it runs pdq, not pdq/robust; name "
        "'north-trust-*'"
    ]


def test_a_schools_shared_bank_reaches_every_gateway_with_its_origin(
    trust: Trust, tmp_path: Path
) -> None:
    """A DSL shares a local incident bank on purpose: the school publishes it (hashes only),
    the trust's central box follows each school's publication under a prefix (two schools may
    name their banks alike) and publishes it on with its own; the origin (school, day, note)
    travels with the bank to every gateway, unchanged by the trust's re-publication."""
    with BankStore(tmp_path / "north.sqlite") as north:
        north.create_bank("incident-7", "a video that went round year 9")
        north.add_signals("incident-7", [SignalInput(SignalType.SHA256, sha("clip"))], "dsl")
        school_key = generate_key()
        publish(north, tmp_path / "north-www", school_key, publisher="North Academy",
                channel="north-shared", banks=["incident-7"], note="ref 2026-117",
                clock=Clock())  # fmt: skip
    from_north = Subscription("north", f"file://{tmp_path / 'north-www'}/",
                              school_key.public_key(), "north-shared", prefix="north-")  # fmt: skip
    assert sync(from_north, Replica(trust.central, trust.clock)).outcome == "updated"
    trust.publish("trust-incidents", "north-incident-7")
    assert trust.sync() == "updated"
    assert trust.blocked("clip")
    day = datetime.fromtimestamp(Clock().now + 1, UTC).strftime("%Y-%m-%d")
    assert trust.gateway.provenance() == {
        "north-incident-7": f"North Academy, {day}: ref 2026-117",
        "trust-incidents": f"Test Trust, {day}",
    }
    # a later publication keeps the first stamp (the day it was shared, not re-published)
    trust.clock.now += 3 * 86_400
    trust.publish("trust-incidents", "north-incident-7")
    trust.sync()
    assert trust.gateway.provenance()["trust-incidents"] == f"Test Trust, {day}"


def test_a_prefix_that_makes_no_bank_name_is_a_configuration_error() -> None:
    from schoolgate.config import parse_config
    from schoolgate.errors import ConfigError

    key = public_key_text(generate_key().public_key())
    text = (f"banks:\n  subscriptions:\n    - {{name: north, url: 'https://n.example/', "
            f"public_key: '{key}', channel: north, prefix: 'North '}}\n")  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "s.yaml")
    assert caught.value.key_path == "banks.subscriptions[0].prefix"


def test_a_publication_of_another_channel_signed_with_the_same_key_is_refused(
    trust: Trust, tmp_path: Path
) -> None:
    """Adversarial pass a26 X1: the trust signed a partner list's folder with the same key; a
    mirror served that folder's newer index to gateways following the trust's, and its full
    snapshot took the trust's banks off them. The subscription pins its channel."""
    trust.publish()
    assert trust.sync() == "updated"
    with BankStore(tmp_path / "partner.sqlite") as other:
        other.create_bank("partner-list")
        publish(other, tmp_path / "partner-www", trust.key, publisher="Test Trust",
                channel="partner", banks=["partner-list"],
                clock=Clock(trust.clock.now + 100))  # fmt: skip
    trust.served = {p.name: p.read_bytes() for p in (tmp_path / "partner-www").glob("*.sgb")}
    assert trust.sync() == "refused"
    assert trust.blocked("one")
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"channel": 1}
    # and one folder stays one channel
    with pytest.raises(BankError, match="one folder per channel"):
        publish(trust.central, trust.out, trust.key, publisher="Test Trust", channel="other",
                banks=["trust-incidents"], clock=trust.clock)  # fmt: skip


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A loopback web server: /trickle sends a byte every 0.1 s, /redirect points at http."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith("redirect/index.sgb"):
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:9/index.sgb")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_or_redirecting_server_is_given_up_on(
    slow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversarial pass a26 S1: a byte every 5 s never tripped the per-read timeout, and the
    sync stalled; a redirect from https to plain http was followed."""
    from schoolgate.trust import subscribe

    monkeypatch.setattr(subscribe, "FETCH_DEADLINE_S", 0.5)
    key = generate_key().public_key()
    started = time.monotonic()
    with pytest.raises(FetchError, match="not fetched within"):
        subscribe.fetch_url(Subscription("s", f"{slow_server}/trickle/", key, "c"), "full-1.sgb")
    assert time.monotonic() - started < 5
    with pytest.raises(FetchError, match="not https"):
        subscribe.fetch_url(Subscription("s", f"{slow_server}/redirect/", key, "c"), "index.sgb")


def test_a_file_the_index_names_must_be_the_one_it_was_signed_with(
    trust: Trust, tmp_path: Path
) -> None:
    """Adversarial pass a28 MIX2: the real index, served with another folder's full snapshot
    of the same version and channel (signed with the same key), took a bank off a gateway.
    The signed index carries each file's digest."""
    trust.publish()
    with BankStore(tmp_path / "staging.sqlite") as staging:
        staging.create_bank("trust-incidents")
        same_version = Clock(trust.clock.now - 1)  # its publication gets the trust's version
        publish(staging, tmp_path / "staging-www", trust.key, publisher="Test Trust",
                channel="trust", banks=["trust-incidents"], clock=same_version)  # fmt: skip
    served = {p.name: p.read_bytes() for p in trust.out.glob("*.sgb")}
    (staged,) = (tmp_path / "staging-www").glob("full-*.sgb")
    assert staged.name in served  # the same name, another folder's content
    served[staged.name] = staged.read_bytes()
    trust.served = served
    assert trust.sync() == "refused"
    state = Replica(trust.gateway).state("trust")
    assert state is not None
    assert state.refusals == {"mismatch": 1}
    trust.served = None
    assert trust.sync() == "updated"
    assert trust.blocked("one")
