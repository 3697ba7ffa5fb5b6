"""A gateway's side of bank distribution: fetch a subscription's index, then the one delta or
the full snapshot that brings the banks up to it, verify each with the subscription's key, and
apply it (trust.replica). Anything refused leaves the last good banks in place, is logged with
its reason, and is counted for the metrics."""

from __future__ import annotations

import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from schoolgate.banks.model import BankError, validate_bank_name
from schoolgate.errors import SchoolgateError
from schoolgate.trust.bundle import Bundle, BundleError, open_bundle
from schoolgate.trust.publish import INDEX
from schoolgate.trust.replica import Applied, Replica
from schoolgate.trust.settings import Subscription

log = logging.getLogger("schoolgate.trust")

MAX_FETCH_BYTES: Final = 1 << 30
FETCH_TIMEOUT_S: Final = 60.0


class FetchError(SchoolgateError):
    """A bundle could not be fetched (the server is down, the file missing, too large)."""


type Fetch = Callable[[Subscription, str], bytes]


def fetch_url(subscription: Subscription, file: str) -> bytes:
    """GET one file of the publication (HTTPS, or file:// for a mounted share)."""
    url = subscription.file_url(file)
    context = ssl.create_default_context(
        cafile=str(subscription.ca_file) if subscription.ca_file else None
    )
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S, context=context) as reply:
            data: bytes = reply.read(MAX_FETCH_BYTES + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise FetchError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    if len(data) > MAX_FETCH_BYTES:
        raise FetchError(f"{url}: larger than {MAX_FETCH_BYTES} bytes")
    return data


@dataclass(frozen=True)
class SyncResult:
    subscription: str
    outcome: str  # updated | current | refused | unreachable
    message: str
    state: Applied | None


def sync(subscription: Subscription, replica: Replica, fetch: Fetch = fetch_url) -> SyncResult:
    """Bring one subscription's banks up to its publisher's latest version."""
    return finish(subscription.name, replica, lambda: _sync(subscription, replica, fetch))


def finish(name: str, replica: Replica, attempt: Callable[[], Applied | None]) -> SyncResult:
    """Run one sync attempt; a refusal or a failed fetch is logged and recorded, and leaves the
    last good banks in place (trust.exchange's syncs end here too)."""
    try:
        applied = attempt()
    except BundleError as refused:
        replica.checked(name, refused)
        log.error("schoolgate banks: subscription %s: bundle refused (%s): %s; the last good "
                  "banks stay in use", name, refused.reason, refused)  # fmt: skip
        return SyncResult(name, "refused", str(refused), replica.state(name))
    except FetchError as failed:
        replica.checked(name, error=str(failed))
        log.warning("schoolgate banks: subscription %s: cannot fetch: %s; the last good banks "
                    "stay in use", name, failed)  # fmt: skip
        return SyncResult(name, "unreachable", str(failed), replica.state(name))
    if applied is None:
        replica.checked(name)
        return SyncResult(name, "current", "up to date", replica.state(name))
    log.warning("schoolgate banks: subscription %s: version %d applied (%s)", name,
                applied.version, ", ".join(applied.banks) or "no banks")  # fmt: skip
    return SyncResult(name, "updated", f"version {applied.version}", applied)


def _sync(subscription: Subscription, replica: Replica, fetch: Fetch) -> Applied | None:
    key = subscription.public_key
    index = open_bundle(fetch(subscription, INDEX), key, expect="index")
    state = replica.state(subscription.name)
    have = state.version if state is not None else None
    if have is not None and index.version < have:
        raise BundleError(
            "replayed",
            f"the index names version {index.version}, older than "
            f"the version applied, {have}: an old index served again",
        )
    if have == index.version:
        return None
    if have is not None and have in index.deltas:
        change = open_bundle(fetch(subscription, index.deltas[have]), key, expect="delta")
        _same_version(change.version, index.version)
        return replica.apply(subscription.name, _prefixed(change, subscription.prefix))
    full = open_bundle(fetch(subscription, index.full_file), key, expect="full")
    _same_version(full.version, index.version)
    return replica.apply(subscription.name, _prefixed(full, subscription.prefix))


def _prefixed(bundle: Bundle, prefix: str) -> Bundle:
    if not prefix:
        return bundle
    try:
        return replace(
            bundle,
            banks={validate_bank_name(prefix + n): c for n, c in bundle.banks.items()},
            removed_banks=tuple(validate_bank_name(prefix + n) for n in bundle.removed_banks),
        )
    except BankError as exc:
        raise BundleError("malformed", f"with the prefix {prefix!r}: {exc}") from None


def _same_version(got: int, index: int) -> None:
    if got != index:
        raise BundleError(
            "mismatch",
            f"the index names version {index}, the file holds {got} (a mixed or stale mirror)",
        )
