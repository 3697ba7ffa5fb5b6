"""A gateway's side of bank distribution: fetch a subscription's index, then the one delta or
the full snapshot that brings the banks up to it, verify each with the subscription's key, and
apply it (trust.replica). Anything refused leaves the last good banks in place, is logged with
its reason, and is counted for the metrics."""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

from schoolgate.banks.model import BankError, validate_bank_name
from schoolgate.errors import SchoolgateError
from schoolgate.trust.bundle import FUTURE_S, HISTORY, Bundle, BundleError, open_bundle
from schoolgate.trust.publish import INDEX
from schoolgate.trust.replica import Applied, Replica
from schoolgate.trust.settings import Subscription

log = logging.getLogger("schoolgate.trust")

# A bundle is gzip'd JSON of hashes (about 100 bytes a hash): a million hashes are tens of MiB.
MAX_FETCH_BYTES: Final = 256 << 20
MAX_INDEX_BYTES: Final = 1 << 20  # the index names files; it is never large
FETCH_TIMEOUT_S: Final = 60.0  # per read
FETCH_DEADLINE_S: Final = 600.0  # per file, all reads together
# The central box publishes at least daily (docs/trust.md); a current index older than the
# SchoolgateTrustBanksOld rule's two days is said so at once (a35 T6: a stale mirror's).
UNCHANGED_S: Final = 2 * 86_400.0


class FetchError(SchoolgateError):
    """A bundle could not be fetched (the server is down, the file missing, too large)."""


type Fetch = Callable[[Subscription, str], bytes]


def fetch_url(subscription: Subscription, file: str) -> bytes:
    """GET one file of the publication (HTTPS, or file:// for a mounted share)."""
    url = subscription.file_url(file)
    context = ssl.create_default_context(
        cafile=str(subscription.ca_file) if subscription.ca_file else None
    )
    limit = MAX_INDEX_BYTES if file == INDEX else MAX_FETCH_BYTES
    deadline = time.monotonic() + FETCH_DEADLINE_S
    opener = urllib.request.build_opener(_HttpsOnlyRedirects, urllib.request.HTTPSHandler(
        context=context))  # fmt: skip
    data = bytearray()
    try:
        with opener.open(url, timeout=FETCH_TIMEOUT_S) as reply:
            # A whole deadline, not only one per read: a server trickling a byte at a time
            # would hold the sync for ever (adversarial pass a26 S1).
            read = getattr(reply, "read1", reply.read)  # what has come, not a full buffer
            while chunk := read(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"{url}: larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"{url}: not fetched within {FETCH_DEADLINE_S:.0f} s")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise FetchError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    return bytes(data)


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect may move a publication to another https:// server (a CDN), never to plain
    http or a file (a26: an https URL redirected to http was followed)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not newurl.startswith("https://"):
            raise FetchError(f"{req.full_url}: redirected to {newurl[:80]}, not https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class SyncResult:
    subscription: str
    outcome: str  # updated | current | refused | unreachable
    message: str
    state: Applied | None


def sync(
    subscription: Subscription,
    replica: Replica,
    fetch: Fetch = fetch_url,
    configured: Collection[str] | None = None,
) -> SyncResult:
    """Bring one subscription's banks up to its publisher's latest version. `configured`: the
    names of every subscription in the configuration (one of another name that followed the
    same folder was this one, renamed)."""
    result = finish(
        subscription.name, replica, lambda: _sync(subscription, replica, fetch, configured)
    )
    if result.outcome != "current" or result.state is None or not result.state.published_at:
        return result
    # "Current" says only that the index names the version applied: say since when, so that
    # an index replayed by a stale mirror shows before the 2-day staleness alert (a35 T6).
    published = result.state.published_at
    when = datetime.fromtimestamp(published, UTC).isoformat(timespec="seconds")
    age = max(0.0, replica.clock() - published)
    message = (f"up to date: the folder has not changed since {when} ({age / 3600:.1f} h ago, "
               f"version {result.state.version})")  # fmt: skip
    if age > UNCHANGED_S:
        message += ("; the central box publishes at least daily: its timer stopped, or a mirror "
                    "serves an old index?")  # fmt: skip
        log.warning("schoolgate banks: subscription %s: %s", subscription.name, message)
    return replace(result, message=message)


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


def _sync(
    subscription: Subscription,
    replica: Replica,
    fetch: Fetch,
    configured: Collection[str] | None,
) -> Applied | None:
    key = subscription.public_key
    index = _pinned(open_bundle(fetch(subscription, INDEX), key, expect="index"), subscription)
    if configured is not None and (
        renamed := replica.adopt(subscription.name, subscription.folder or index.folder, configured)
    ):
        log.warning("schoolgate banks: subscription %s follows the folder subscription %s "
                    "followed (renamed in the configuration): its banks are %s's now",
                    subscription.name, renamed, subscription.name)  # fmt: skip
    state = replica.state(subscription.name)
    have = state.version if state is not None else None
    if have is not None and index.version < have:
        raise BundleError(
            "replayed",
            f"the index names version {index.version}, older than "
            f"the version applied, {have}: an old index served again",
        )
    if index.version > replica.clock() + FUTURE_S:
        # Versions are Unix times: one far ahead was made on a box with a wrong clock, and
        # would make every real publication after it look replayed (a30 N2s: for a year).
        raise BundleError("future", _future(index, replica.clock()))
    _same_folder(subscription, state, index)
    _same_lineage(subscription, state, index)
    withheld = state is not None and state.withheld
    again = bool(withheld) and have == index.version and replica.clash_cleared(subscription.name)
    drifted = replica.drifted(subscription.name)
    if state is not None and state.version is not None and state.prefix != subscription.prefix:
        # The banks were applied under another prefix: the full snapshot names them anew, and
        # the banks of the old names go with it (a41 F8: they stayed, frozen).
        log.warning("schoolgate banks: subscription %s: its prefix is now %r (was %r); "
                    "fetching the full snapshot", subscription.name, subscription.prefix,
                    state.prefix)  # fmt: skip
        drifted = (*drifted, *state.banks)
    if drifted:
        # A bank cleared, cut or changed here since its version was applied: the version alone
        # would call it current, and a delta would apply onto what is left (a35 F1, a39 F1).
        log.warning("schoolgate banks: subscription %s: bank(s) %s no longer hold what version "
                    "%s brought (removed or changed on this gateway?); fetching the full snapshot",
                    subscription.name, ", ".join(drifted), have)  # fmt: skip
        again = have == index.version
    if have == index.version and not again:
        return None
    if have is not None and have in index.deltas and not withheld and not drifted:
        try:
            data = _named(subscription, fetch, index, index.deltas[have])
        except FetchError as missing:
            # The full snapshot brings the banks up to the same version (a28: a delta a
            # mirror lost left the gateway behind).
            log.warning("schoolgate banks: subscription %s: %s; fetching the full snapshot",
                        subscription.name, missing)  # fmt: skip
        else:
            change = _pinned(open_bundle(data, key, expect="delta"), subscription)
            _same_version(change.version, index.version)
            return _apply(subscription, replica, state, change, index, configured=configured)
    full = _pinned(open_bundle(_named(subscription, fetch, index, index.full_file), key,
                               expect="full"), subscription)  # fmt: skip
    _same_version(full.version, index.version)
    # `again`: the full snapshot of the version applied, for banks a clash withheld that no
    # longer clash (a30 W1: they waited for the trust's next publication)
    return _apply(subscription, replica, state, full, index, again=again, configured=configured)


def _apply(
    subscription: Subscription,
    replica: Replica,
    state: Applied | None,
    bundle: Bundle,
    index: Bundle,
    *,
    again: bool = False,
    configured: Collection[str] | None = None,
) -> Applied:
    applied = replica.apply(
        subscription.name,
        _prefixed(bundle, subscription.prefix),
        again=again,
        folder=index.folder,
        configured=bool(subscription.folder),
        link=index.history.get(index.version, ""),
        prefix=subscription.prefix,
        subscriptions=configured,
    )
    if index.folder and not subscription.folder and (state is None or not state.folder):
        # Trust on first use: a staging folder signed with the same key, seen first, would be
        # followed as well (a35 F2); the configuration can name the folder instead.
        log.warning("schoolgate banks: subscription %s: following publication folder %s, taken "
                    "on first use: set `folder: %s` in its banks.subscriptions entry to follow "
                    "that folder only", subscription.name, index.folder, index.folder)  # fmt: skip
    return applied


def _future(index: Bundle, now: float) -> str:
    """Why a version far ahead is refused, with both clocks: far more often this gateway's
    clock is behind (a dead RTC battery, no NTP) than the publisher's ahead (a35 T2)."""

    def when(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")

    return (
        f"the index names version {index.version}, published {when(index.created_at)}, more "
        f"than a day ahead of this gateway's clock ({when(now)}): if this gateway's clock is "
        "behind, correct it (timedatectl; check NTP and the real-time clock) and sync again; "
        "if it is right, the publisher's clock ran ahead: correct it there, and publish with "
        "--reset-version (docs/trust.md)"
    )


def _same_folder(subscription: Subscription, state: Applied | None, index: Bundle) -> None:
    """The folder the configuration names, or else the one this gateway pinned first."""
    if subscription.folder:
        if index.folder != subscription.folder:
            raise BundleError("folder", f"the index comes from publication folder "
                              f"{index.folder or '(none)'}, not {subscription.folder} that "
                              "this subscription's `folder:` names (a second box, a restored "
                              "backup, a staging folder signed with the same key); if the trust "
                              "moved its publication on purpose, change `folder:`")  # fmt: skip
        return
    if state is not None and state.folder and index.folder != state.folder:
        raise BundleError("folder", "the index comes from another publication folder of this "
                          "channel than the one this gateway follows (a second box, a restored "
                          "backup, a staging folder); if the trust moved its publication on "
                          "purpose: schoolgate banks subscriptions --repin "
                          f"{subscription.name}")  # fmt: skip


def _same_lineage(subscription: Subscription, state: Applied | None, index: Bundle) -> None:
    """The folder's lineage must hold the publication this gateway applied: one that does not
    is a fork, a copy of the folder published on from another box (a35 F3). Which side is the
    trust's is the operator's call; a gateway too far behind to tell goes on."""
    if state is None or state.version is None or not state.link or not index.history:
        return
    if subscription.folder and state.folder != subscription.folder:
        return  # the configuration names another folder than the one pinned: a move, not a fork
    have, history = state.version, index.history
    if have in history:
        if history[have] == state.link:
            return
        what = "the folder names another publication of that version"
    elif have > min(history):
        what = "the folder's lineage has no publication of that version"
    elif len(history) < HISTORY:
        what = f"the folder's lineage starts after it, at version {min(history)}"
    else:
        log.warning("schoolgate banks: subscription %s: version %s is older than the folder's "
                    "lineage reaches back, so it cannot be checked for a fork",
                    subscription.name, have)  # fmt: skip
        return
    raise BundleError("fork", _forked(subscription, have, what))


def _forked(subscription: Subscription, have: int, what: str) -> str:
    return (
        f"the index (a publication folder of the same id and key) does not descend from "
        f"version {have} that this gateway applied: {what}. Two boxes publish from copies of "
        "one folder (a second box, a restored backup, a staging copy). Find the trust's own "
        "central box and stop the other; if this gateway followed the wrong one, run "
        f"`schoolgate banks subscriptions --reset {subscription.name}` here"
    )


def _named(subscription: Subscription, fetch: Fetch, index: Bundle, file: str) -> bytes:
    """A file the signed index names, as the index's digest says it is."""
    data = fetch(subscription, file)
    if hashlib.sha256(data).hexdigest() != index.digests.get(file):
        raise BundleError("mismatch", f"{file} is not the file the index names (its digest "
                          "differs: another folder's, or a stale mirror's)")  # fmt: skip
    return data


def _pinned(bundle: Bundle, subscription: Subscription) -> Bundle:
    if bundle.channel != subscription.channel:
        raise BundleError("channel", f"the bundle is of channel {bundle.channel!r}, the "
                          f"subscription follows {subscription.channel!r}: another publication "
                          "signed with the same key")  # fmt: skip
    return bundle


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
