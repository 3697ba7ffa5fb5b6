"""`banks.subscriptions`: the trust publications a gateway follows."""

from __future__ import annotations

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
    interval_s: float = DEFAULT_INTERVAL_S
    ca_file: Path | None = None  # the web server's CA, when not in the system's store
    # Put before every bank name of the publication: the trust's central box follows each
    # school's shared incident banks, and two schools may name theirs alike.
    prefix: str = ""

    def file_url(self, file: str) -> str:
        return self.url.rstrip("/") + "/" + file


def parse_subscriptions(node: Node) -> tuple[Subscription, ...]:
    found: dict[str, Subscription] = {}
    for entry in node.elements():
        entry.mapping(allowed={"name", "url", "public_key", "interval_s", "ca_file", "prefix"})
        name_node = entry.child("name")
        try:
            name = validate_bank_name(name_node.text())
        except BankError as exc:
            name_node.fail(str(exc).replace("bank name", "subscription name"))
        if name in found:
            name_node.fail(f"a second subscription named {name!r}")
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
        found[name] = Subscription(
            name,
            url,
            key,
            entry.child("interval_s").number(DEFAULT_INTERVAL_S, minimum=10),
            entry.child("ca_file").path_value(),
            _prefix(entry.child("prefix")),
        )
    return tuple(found.values())


def _prefix(node: Node) -> str:
    prefix = node.text("")
    if prefix:
        try:
            validate_bank_name(prefix + "x")
        except BankError:
            node.fail(f"{prefix!r}: bank names start with it, so use a-z, 0-9, '.', '_', '-'")
    return prefix
