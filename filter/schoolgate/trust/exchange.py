"""Hash-sharing programmes as bank subscriptions, through the field's own library,
python-threatexchange (`pip install 'schoolgate[exchanges]'`): ThreatExchange, NCMEC and StopNCII
for a trust or filtering partner with membership, and the library's file and sample exchanges.

A sync fetches the programme's whole current list through the library's SignalExchangeAPI,
converts it with the library's own merge and signal-type conversion, keeps the signal types
schoolgate matches (PDQ, and MD5 / SHA-256 of video files, which are file digests), and applies
it as one full bundle to the subscription's bank (trust.replica: atomic, owned, versioned), so
an exchange subscription is refused, counted and recovered from exactly as a trust's is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from schoolgate.banks.model import BankError, SignalInput, SignalType, check_signal
from schoolgate.trust.bundle import BankContent, Bundle, BundleError
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import AnySubscription, ExchangeSubscription
from schoolgate.trust.subscribe import FetchError, SyncResult, finish, sync

log = logging.getLogger("schoolgate.trust")

# The library's signal-type names -> what schoolgate banks; other types (URLs, text) are left.
SIGNAL_TYPES: Final = {
    "pdq": SignalType.PDQ,
    "video_md5": SignalType.MD5,
    "video_sha256": SignalType.SHA256,
}
MAX_DELTAS: Final = 100_000  # pages of one fetch: a programme that never ends is cut off
MIN_TO_GUARD: Final = 2  # a bank this big that a list would more than halve keeps its hashes

type Fetch = Callable[[ExchangeSubscription], list[SignalInput]]


def _api(subscription: ExchangeSubscription) -> tuple[Any, Any]:
    """The library's exchange API for the subscription, and its collaboration config."""
    from threatexchange.exchanges.collab_config import CollaborationConfigBase
    from threatexchange.exchanges.impl.file_api import (
        FileCollaborationConfig,
        LocalFileSignalExchangeAPI,
    )
    from threatexchange.exchanges.impl.static_sample import StaticSampleSignalExchangeAPI

    name, options = subscription.name, subscription.options
    if subscription.exchange == "sample":
        collab: Any = CollaborationConfigBase(name=name, api="sample", enabled=True)
        return StaticSampleSignalExchangeAPI.for_collab(collab), collab
    if subscription.exchange == "file":
        collab = FileCollaborationConfig(name=name, api="local_file", enabled=True,
                                         filename=options["filename"],
                                         signal_type=options.get("signal_type"))  # fmt: skip
        return LocalFileSignalExchangeAPI.for_collab(collab), collab
    return _member_api(subscription)


def _member_api(subscription: ExchangeSubscription) -> tuple[Any, Any]:
    """The programmes that need membership, with the credentials in the subscription's file:
    JSON with the library's own field names (NCMEC: user, password; StopNCII:
    fetch_function_key, subscription_key; ThreatExchange: api_token)."""
    from threatexchange.exchanges.clients.ncmec.hash_api import NCMECEnvironment
    from threatexchange.exchanges.collab_config import CollaborationConfigBase
    from threatexchange.exchanges.impl import fb_threatexchange_api as te
    from threatexchange.exchanges.impl import ncmec_api as ncmec
    from threatexchange.exchanges.impl import stop_ncii_api as stopncii

    name, options = subscription.name, subscription.options
    api: Any
    collab: Any
    if subscription.exchange == "ncmec":
        api = ncmec.NCMECSignalExchangeAPI
        environment = NCMECEnvironment[options.get("environment", "NGO")]
        collab = ncmec.NCMECCollabConfig(name=name, enabled=True,
                                         environment=environment)  # fmt: skip
    elif subscription.exchange == "stopncii":
        api = stopncii.StopNCIISignalExchangeAPI
        collab = CollaborationConfigBase(name=name, api="stop_ncii", enabled=True)
    else:
        api = te.FBThreatExchangeSignalExchangeAPI
        collab = te.FBThreatExchangeCollabConfig(
            name=name, enabled=True, privacy_group=int(options["privacy_group"])
        )
    credentials = api.get_credential_cls()(**_credentials(subscription))
    return api.for_collab(collab, credentials), collab


def _credentials(subscription: ExchangeSubscription) -> dict[str, str]:
    if subscription.credentials_file is None:
        raise FetchError(f"{subscription.exchange} needs credentials_file (membership)")
    try:
        loaded = json.loads(subscription.credentials_file.read_text())
        return {str(k): str(v) for k, v in dict(loaded).items()}
    except (OSError, ValueError, TypeError) as exc:
        raise FetchError(f"{subscription.credentials_file}: {exc}") from None


def fetch_exchange(subscription: ExchangeSubscription) -> list[SignalInput]:
    """The programme's current list, as the library merges and converts it."""
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal
    from threatexchange.signal_type.sha256 import VideoSHA256Signal

    types = [PdqSignal, VideoMD5Signal, VideoSHA256Signal]
    try:
        api, collab = _api(subscription)
        merged: dict[Any, Any] = {}
        for count, delta in enumerate(api.fetch_iter(types, None)):
            if count >= MAX_DELTAS:
                raise FetchError(f"more than {MAX_DELTAS} pages: cut off")
            api.naive_fetch_merge(merged, delta.updates)
        converted = api.naive_convert_to_signal_type(types, collab, merged)
    except FetchError:
        raise
    except Exception as exc:  # the library's own errors: a network, an API, a file
        raise FetchError(f"{subscription.exchange}: {type(exc).__name__}: {exc}") from None
    return list(_signals(subscription.exchange, converted))


def _signals(exchange: str, converted: dict[Any, dict[str, Any]]) -> Iterable[SignalInput]:
    for signal_type, values in converted.items():
        ours = SIGNAL_TYPES.get(signal_type.get_name())
        if ours is None:
            continue
        for value in sorted(values):
            signal = SignalInput(ours, value.strip().lower(), note=exchange)
            try:
                check_signal(signal)
            except BankError:
                log.warning("schoolgate banks: %s: a %s value schoolgate cannot use: %.80s",
                            exchange, signal_type.get_name(), value)  # fmt: skip
                continue
            yield signal


def sync_exchange(
    subscription: ExchangeSubscription,
    replica: Replica,
    fetch: Fetch = fetch_exchange,
    clock: Callable[[], float] = time.time,
) -> SyncResult:
    """Bring the subscription's bank to the programme's current list."""
    name = subscription.name

    def apply() -> Any:
        signals = fetch(subscription)
        held = _held(replica, subscription.bank)
        if held >= MIN_TO_GUARD and len(signals) < held / 2:
            # A list file caught half-written or emptied, a programme's bad page: kept out, as a
            # refused bundle is (adversarial pass a28 E1, E3: an emptied list unbanked a picture)
            raise BundleError(
                "shrunk",
                f"the list has {len(signals)} usable hashes, the bank {held}: not applied "
                "(clear the bank to start it afresh)",
            )
        state = replica.state(name)
        if (
            state is not None
            and state.banks == (subscription.bank,)
            and _same(replica, subscription.bank, signals)
        ):
            return None
        now = clock()
        version = max(int(now), (state.version or 0) + 1 if state is not None else 0)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        content = BankContent(
            description=f"the {subscription.exchange} hash list",
            source=subscription.exchange,
            provenance=f"{subscription.exchange} ({name}), {day}",
            signals=tuple(signals),
        )
        bundle = Bundle("full", subscription.exchange, version, now, {subscription.bank: content})
        return replica.apply(name, bundle)

    return finish(name, replica, apply)


def _held(replica: Replica, bank: str) -> int:
    try:
        return replica.store.bank(bank).total
    except BankError:
        return 0


def _same(replica: Replica, bank: str, signals: list[SignalInput]) -> bool:
    """Whether the bank already holds exactly these signals (nothing to apply)."""
    try:
        held = {(s.signal_type, s.value) for s in replica.store.iter_signals(bank)}
    except BankError:
        return False
    return held == {(SignalType(s.signal_type), s.value) for s in signals}


def sync_any(
    subscription: AnySubscription,
    replica: Replica,
    configured: Collection[str] | None = None,
) -> SyncResult:
    """Sync either kind of `banks.subscriptions` entry: a trust's publication or a programme.
    `configured`: every configured subscription's name (see trust.subscribe.sync)."""
    if isinstance(subscription, ExchangeSubscription):
        return sync_exchange(subscription, replica)
    return sync(subscription, replica, configured=configured)
