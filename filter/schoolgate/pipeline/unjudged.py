"""What is known of an item without analysing it: its digests and the bank entries equal to
them. Every item gets these first; an item no worker could judge (overload, a timeout) gets
them too, so a banked file itself is still a match and the audit names what was refused
(adversarial pass a60 F3: a banked photo in a pupil's burst was refused as `overload`, with no
hashes in the audit and no alert)."""

from __future__ import annotations

from dataclasses import replace

from schoolgate.matching.matcher import Matcher
from schoolgate.media.hashing import exact_hashes
from schoolgate.pipeline.verdict import FAILURES, Findings


def exact_findings(data: bytes, matcher: Matcher) -> Findings:
    """The file's size and digests, and the bank entries equal to them."""
    exact = exact_hashes(data)
    hashes: dict[str, str | int] = {"sha256": exact.sha256, "md5": exact.md5, "sha1": exact.sha1}
    return Findings(size=len(data), hashes=hashes, matches=tuple(matcher.match_exact(exact)))


def unjudged_findings(
    size: int | None,
    failure: str,
    detail: str,
    action: str | None,
    data: bytes | None,
    matcher: Matcher,
) -> Findings:
    """The findings of an item that could not be inspected: `failure` (one of FAILURES) with
    `detail`, `action` ("block" | "allow") in place of the group's fail policy where given, and
    `data`'s exact findings where it is at hand."""
    if failure not in FAILURES:
        raise ValueError(f"unknown failure kind {failure!r}; expected one of {FAILURES}")
    if action not in (None, "block", "allow"):
        raise ValueError(f"unknown action {action!r}")
    base = Findings() if data is None else exact_findings(data, matcher)
    return replace(base, size=size, failure=failure, failure_detail=detail, failure_action=action)
