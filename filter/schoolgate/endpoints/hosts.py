"""Host names and host patterns: normalising a name, exact and `*.suffix` patterns, and an index
that finds the most specific pattern for a host."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# One DNS label: letters, digits, - and _, never starting or ending with -.
_LABEL: Final = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_host(host: str) -> str:
    """Lower-case `host`, drop a port, brackets around IPv6 and a trailing dot; IDNA to ASCII."""
    value = host.strip()
    if value.startswith("["):
        end = value.find("]")
        value = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.rstrip(".").lower()
    if not value.isascii():
        try:
            value = value.encode("idna").decode("ascii")
        except UnicodeError:
            return value
    return value


def check_pattern(pattern: str) -> str:
    """Return the normalised pattern or raise ValueError saying what is wrong with it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("a host pattern must be a non-empty string")
    body = pattern[2:] if pattern.startswith("*.") else pattern
    if "*" in body:
        raise ValueError(f"{pattern!r}: only exact hosts and '*.suffix' patterns are allowed")
    host = normalize_host(body)
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{pattern!r} is not a valid DNS name")
    return f"*.{host}" if pattern.startswith("*.") else host


class HostIndex[T]:
    """Maps exact hosts and `*.suffix` patterns to values; lookup walks the labels of a host.

    `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com` itself. The
    most specific pattern wins; values added for the same pattern keep their order.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._suffix: dict[str, list[T]] = {}

    def add(self, pattern: str, value: T) -> None:
        """Add `value` under a pattern already checked by `check_pattern`."""
        if pattern.startswith("*."):
            self._suffix.setdefault(pattern[2:], []).append(value)
        else:
            self._exact.setdefault(pattern, []).append(value)

    def lookup(self, host: str) -> list[T]:
        """Values for the most specific pattern matching `host` (empty when none does)."""
        name = normalize_host(host)
        found = self._exact.get(name)
        if found:
            return found
        dot = name.find(".")
        while dot >= 0:
            found = self._suffix.get(name[dot + 1 :])
            if found:
                return found
            dot = name.find(".", dot + 1)
        return []


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether `host` matches any exact or `*.suffix` pattern (patterns already normalised)."""
    name = normalize_host(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return False
