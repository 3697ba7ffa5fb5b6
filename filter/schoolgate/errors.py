"""Exceptions with messages written for the person who has to act on them."""

from __future__ import annotations


class SchoolgateError(Exception):
    """Base for every error schoolgate raises on purpose."""


class ConfigError(SchoolgateError):
    """A configuration file is invalid. Names the file, the key path and the problem."""

    def __init__(self, source: str, key_path: str, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")


class MediaRefused(SchoolgateError):
    """Media that is not decoded on purpose (a bomb, truncated, over a cap, unknown format).

    `reason` is a short stable code for metrics, audit and policy (for example "pixel_cap",
    "truncated", "unsupported"); the message explains it to a person.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
