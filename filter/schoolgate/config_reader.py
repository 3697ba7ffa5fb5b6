"""A small typed reader over parsed YAML that names the key path in every error.

Config loading is where school IT meets the product first, so each error says which file, which key
(`policy.groups[1].subnets[0]`) and what is wrong, instead of a traceback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from schoolgate.errors import ConfigError


class Node:
    """A value at a key path inside one configuration source."""

    def __init__(self, source: str, path: str, value: Any) -> None:
        self.source = source
        self.path = path
        self.value = value

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(self.source, self.path, problem)

    @property
    def missing(self) -> bool:
        return self.value is None

    def child(self, key: str) -> Node:
        mapping = self.mapping()
        path = f"{self.path}.{key}" if self.path else key
        return Node(self.source, path, mapping.get(key))

    def mapping(self, allowed: set[str] | None = None) -> Mapping[str, Any]:
        if self.value is None:
            return {}
        if not isinstance(self.value, Mapping):
            self.fail(f"expected a mapping (key: value), got {_describe(self.value)}")
        for key in self.value:
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {key!r}")
        if allowed is not None:
            unknown = sorted(set(self.value) - allowed)
            if unknown:
                where = f"{self.path}.{unknown[0]}" if self.path else unknown[0]
                raise ConfigError(
                    self.source,
                    where,
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                )
        return self.value

    def items(self) -> Iterator[tuple[str, Node]]:
        for key in self.mapping():
            yield key, self.child(key)

    def elements(self) -> list[Node]:
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            self.fail(f"expected a list, got {_describe(self.value)}")
        return [Node(self.source, f"{self.path}[{i}]", v) for i, v in enumerate(self.value)]

    def text(self, default: str | None = None) -> str:
        if self.value is None:
            if default is None:
                self.fail("is required")
            return default
        if not isinstance(self.value, str):
            self.fail(f"expected text, got {_describe(self.value)}")
        return self.value

    def optional_text(self) -> str | None:
        return None if self.value is None else self.text()

    def choice(self, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(default)
        if value not in choices:
            self.fail(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def flag(self, default: bool) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            self.fail(f"expected true or false, got {_describe(self.value)}")
        return self.value

    def integer(self, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = default if self.value is None else self.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected a whole number, got {_describe(value)}")
        self._check_range(value, minimum, maximum)
        return value

    def number(
        self, default: float, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        value = default if self.value is None else self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"expected a number, got {_describe(value)}")
        self._check_range(float(value), minimum, maximum)
        return float(value)

    def path_value(self, default: Path | None = None) -> Path | None:
        if self.value is None:
            return default
        return Path(self.text()).expanduser()

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = self.text()
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.fail(f"{text!r} is not an IP address or network such as 10.20.0.0/16")

    def _check_range(self, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            self.fail(f"{value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            self.fail(f"{value} is above the maximum {maximum}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return f"{type(value).__name__} {value!r}"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where banks, the audit log, the CA and the outbox live unless `data_dir` says otherwise.
DEFAULT_DATA_DIR = Path("/var/lib/schoolgate")


def path_under(data_dir: Path, node: Node, default_name: str) -> Path:
    """A path from config; relative paths and the default live under the data dir."""
    value = node.path_value()
    if value is None:
        return data_dir / default_name
    return value if value.is_absolute() else data_dir / value


def listen_host(node: Node, default: str) -> str:
    """An IP address to listen on."""
    host = node.text(default)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        node.fail(f"{host!r} is not an IP address to listen on, such as 127.0.0.1 or 0.0.0.0")
    return host
