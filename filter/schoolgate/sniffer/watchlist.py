"""What the passive sniffer reports: un-inspectable catalogued apps and circumvention.

Names (DNS queries, TLS and QUIC server names) are matched against the endpoint catalog's apps that
the proxy cannot inspect, and against the circumvention lists (`config/circumvention.yaml` plus
the site's own); ports against the lists' port table. Every match carries a category and a short
label from configuration, never the raw name, so metric labels stay bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Final

import yaml

from schoolgate.config_reader import Node
from schoolgate.endpoints.catalog import Catalog
from schoolgate.endpoints.hosts import HostIndex, normalize_host
from schoolgate.errors import ConfigError

# Fixed categories: the lists may only use these, so the metric label set is known in advance.
UNINSPECTABLE_APP: Final = "uninspectable_app"
NAME_CATEGORIES: Final = ("doh", "vpn", "proxy", "tor")
PORT_CATEGORIES: Final = ("dot", "vpn", "proxy", "tor")
CATEGORIES: Final = (UNINSPECTABLE_APP, "doh", "dot", "vpn", "proxy", "tor")
DEFAULT_REPORTED_INSPECTIONS: Final = ("none", "pinned_native")
DEFAULT_SOURCE: Final = "schoolgate.defaults/circumvention.yaml"
_LABEL: Final = re.compile(r"^[a-z0-9_]{1,40}$")
_DNS_LABEL: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Match:
    category: str
    label: str  # a catalog app name or a list label: bounded, safe as a metric label


class Watchlist:
    """Name and port lookups; immutable after construction."""

    def __init__(self, catalog: Catalog | None = None, reported: Iterable[str] = ()) -> None:
        self._catalog = catalog
        self._reported = frozenset(reported)
        self._names: HostIndex[Match] = HostIndex()
        self._ports: dict[tuple[str, int], Match] = {}

    def add_name(self, domain: str, match: Match) -> None:
        """`domain` and all its subdomains."""
        self._names.add(domain, match)
        self._names.add(f"*.{domain}", match)

    def add_port(self, protocol: str, port: int, match: Match) -> None:
        self._ports[(protocol, port)] = match

    def match_name(self, name: str) -> Match | None:
        found = self._names.lookup(name)
        if found:
            return found[0]
        if self._catalog is not None:
            app = self._catalog.app_for_host(name)
            if app is not None and app.inspection in self._reported:
                return Match(UNINSPECTABLE_APP, app.name)
        return None

    def match_port(self, protocol: str, port: int) -> Match | None:
        return self._ports.get((protocol, port))

    @property
    def ports(self) -> list[tuple[str, int]]:
        return sorted(self._ports)

    @classmethod
    def load(
        cls,
        catalog: Catalog | None,
        paths: Sequence[Path] = (),
        reported: Iterable[str] = DEFAULT_REPORTED_INSPECTIONS,
    ) -> Watchlist:
        """The packaged circumvention list, then each site list; raises ConfigError."""
        watchlist = cls(catalog, reported)
        text = files("schoolgate.defaults").joinpath("circumvention.yaml").read_text("utf-8")
        _merge(watchlist, text, DEFAULT_SOURCE)
        for path in paths:
            try:
                site_text = Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(str(path), "", f"cannot read the file: {error}") from None
            _merge(watchlist, site_text, str(path))
        return watchlist


def _domain(node: Node) -> str:
    text = node.text()
    name = normalize_host(text.removeprefix("*."))
    labels = name.split(".")
    if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        node.fail(f"{text!r} is not a DNS name such as dns.example.net")
    return name


def _label(node: Node, text: str) -> str:
    if not _LABEL.match(text):
        node.fail(f"{text!r}: a label is 1-40 lower-case letters, digits or _")
    return text


def _merge(watchlist: Watchlist, text: str, source: str) -> None:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, "", f"not valid YAML: {error}") from None
    root = Node(source, "", raw if raw is not None else {})
    root.mapping(allowed={"version", "names", "ports"})
    if root.child("version").integer(1) != 1:
        root.child("version").fail("unsupported version (expected 1)")
    names = root.child("names")
    names.mapping(allowed=set(NAME_CATEGORIES))
    for category, labels in names.items():
        for label, domains in labels.items():
            match = Match(category, _label(labels, label))
            for domain in domains.elements():
                watchlist.add_name(_domain(domain), match)
    for entry in root.child("ports").elements():
        entry.mapping(allowed={"label", "category", "protocol", "port"})
        match = Match(
            entry.child("category").choice(PORT_CATEGORIES),
            _label(entry.child("label"), entry.child("label").text()),
        )
        protocol = entry.child("protocol").choice(("tcp", "udp"))
        watchlist.add_port(protocol, entry.child("port").integer(0, 1, 65535), match)
