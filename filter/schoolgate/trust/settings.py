"""`banks.subscriptions`: the trust publications a gateway follows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schoolgate.banks.model import BankError, validate_bank_name
from schoolgate.config_reader import Node
from schoolgate.trust.bundle import parse_public_key

DEFAULT_INTERVAL_S = 900.0


@dataclass(frozen=True)
class Subscription:
    """One entry of `banks.subscriptions`."""

    name: str
    url: str  # the folder `schoolgate banks publish` writes, as a web server serves it
    public_key: Ed25519PublicKey
    channel: str  # the publication's name (`banks publish --channel`): bundles of another refused
    interval_s: float = DEFAULT_INTERVAL_S
    ca_file: Path | None = None  # the web server's CA, when not in the system's store
    # Put before every bank name of the publication: the trust's central box follows each
    # school's shared incident banks, and two schools may name theirs alike.
    prefix: str = ""
    # The publication folder's id (`banks publish` prints it): a gateway follows that folder
    # only, from its first sync on; unset, it follows the first folder it sees (a35 F2).
    folder: str = ""

    def file_url(self, file: str) -> str:
        return self.url.rstrip("/") + "/" + file


EXCHANGES = ("sample", "file", "ncmec", "stopncii", "threatexchange")


@dataclass(frozen=True)
class ExchangeSubscription:
    """An entry of `banks.subscriptions` that follows a hash-sharing programme (through
    python-threatexchange) into one bank it owns."""

    name: str
    exchange: str  # one of EXCHANGES
    bank: str
    options: dict[str, str]  # the programme's own: file: filename, signal_type; ncmec: ...
    credentials_file: Path | None = None  # membership, as JSON (docs/trust.md)
    interval_s: float = DEFAULT_INTERVAL_S


type AnySubscription = Subscription | ExchangeSubscription


def parse_subscriptions(node: Node) -> tuple[AnySubscription, ...]:
    found: dict[str, AnySubscription] = {}
    prefixes: dict[str, tuple[str, Node]] = {}  # subscription -> its prefix, where it has one
    for entry in node.elements():
        name_node = entry.child("name")
        try:
            name = validate_bank_name(name_node.text())
        except BankError as exc:
            name_node.fail(str(exc).replace("bank name", "subscription name"))
        if name in found:
            name_node.fail(f"a second subscription named {name!r}")
        if not entry.child("exchange").missing:
            found[name] = _exchange(entry, name)
            continue
        entry.mapping(allowed={"name", "url", "public_key", "channel", "interval_s", "ca_file",
                               "prefix", "exchange", "folder"})  # fmt: skip
        url_node = entry.child("url")
        url = url_node.text()
        if not url.startswith(("https://", "file://")):
            url_node.fail(
                f"{url!r}: bundles are fetched over https:// (or file:// from a mounted share)"
            )
        key_node = entry.child("public_key")
        try:
            key = parse_public_key(key_node.text())
        except ValueError as exc:
            key_node.fail(str(exc))
        subscription = Subscription(
            name,
            url,
            key,
            _channel(entry.child("channel")),
            entry.child("interval_s").number(DEFAULT_INTERVAL_S, minimum=10),
            entry.child("ca_file").path_value(),
            _prefix(entry.child("prefix")),
            _folder(entry.child("folder")),
        )
        found[name] = subscription
        if subscription.prefix:
            prefixes[name] = (subscription.prefix, entry.child("prefix"))
    _disjoint(prefixes)
    return tuple(found.values())


def _disjoint(prefixes: dict[str, tuple[str, Node]]) -> None:
    """No prefix may start another: with `north-` and `north-east-`, both schools' bundles
    could name `north-east-x`, and the clash would withhold it (adversarial pass a35 T3)."""
    seen: list[tuple[str, str]] = []
    for name, (prefix, node) in prefixes.items():
        for other, earlier in seen:
            if prefix.startswith(earlier) or earlier.startswith(prefix):
                node.fail(
                    f"{prefix!r} overlaps subscription {other}'s prefix {earlier!r}: a bank "
                    f"named {max(prefix, earlier, key=len)}x could come from either; give each "
                    "school a prefix that does not start another's (e.g. north- and northeast-)"
                )
        seen.append((name, prefix))


def _folder(node: Node) -> str:
    folder = node.text("").strip()
    if folder and not re.fullmatch(r"[0-9a-f]{8,64}", folder):
        node.fail(f"{folder[:70]!r}: the folder id `schoolgate banks publish` prints (hex digits)")
    return folder


def unpinned(subscriptions: tuple[AnySubscription, ...]) -> list[str]:
    """Advice for `check-config`: the trust subscriptions that follow whichever folder they see
    first, a staging folder signed with the same key included (a35 F2)."""
    return [
        f"banks.subscriptions {s.name}: no `folder:`, so this gateway follows the first "
        "publication folder it sees; set it to the id `schoolgate banks publish` prints"
        for s in subscriptions
        if isinstance(s, Subscription) and not s.folder
    ]


def _prefix(node: Node) -> str:
    prefix = node.text("")
    if prefix:
        try:
            validate_bank_name(prefix + "x")
        except BankError:
            node.fail(f"{prefix!r}: bank names start with it, so use a-z, 0-9, '.', '_', '-'")
    return prefix


def _exchange(entry: Node, name: str) -> ExchangeSubscription:
    entry.mapping(allowed={"name", "exchange", "bank", "options", "credentials_file",
                           "interval_s"})  # fmt: skip
    exchange = entry.child("exchange").choice(EXCHANGES)
    try:
        import threatexchange  # noqa: F401  (the optional extra)
    except ImportError:
        entry.child("exchange").fail(
            "needs python-threatexchange: install schoolgate with its exchanges extra "
            "(pip install 'schoolgate[exchanges]')"
        )
    bank_node = entry.child("bank")
    try:
        bank = validate_bank_name(bank_node.text())
    except BankError as exc:
        bank_node.fail(str(exc))
    options = {key: child.text() for key, child in entry.child("options").items()}
    if exchange == "file" and "filename" not in options:
        entry.child("options").child("filename").fail("is required for the file exchange")
    if exchange == "threatexchange" and "privacy_group" not in options:
        entry.child("options").child("privacy_group").fail("is required for ThreatExchange")
    credentials = entry.child("credentials_file").path_value()
    if exchange in ("ncmec", "stopncii", "threatexchange") and credentials is None:
        entry.child("credentials_file").fail(f"is required for {exchange} (its membership)")
    return ExchangeSubscription(
        name,
        exchange,
        bank,
        options,
        credentials,
        entry.child("interval_s").number(DEFAULT_INTERVAL_S, minimum=10),
    )


def _channel(node: Node) -> str:
    channel = node.text()
    if not channel.strip():
        node.fail("must name the publication (its `banks publish --channel`): empty pins nothing")
    return channel
