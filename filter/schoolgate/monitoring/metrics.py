"""Prometheus metrics: declared once here, recorded where decisions are taken, served by
`MetricsServer`.

Every label value comes from a bounded vocabulary, so no pupil, request or hash can add series:
app and group names come from the loaded catalog and policy (anything else is "other"), reasons
and failures from fixed lists, banks and models from what the site configured (capped). Client
addresses are never labels. Recording never raises: a metrics bug must not cost an inspection, so
each recorder swallows its own errors and counts them in `schoolgate_metrics_errors_total`.

Why one module of this length: every metric family is declared once, at module level, in the
prometheus-client way, so that one file lists every series name the dashboards, the alert rules and
their tests query; the recorders beside them are one-liners.
"""

from __future__ import annotations

import functools
import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY as REGISTRY  # re-exported: the registry that is served
from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schoolgate.media.sniff import MediaType
from schoolgate.pipeline.verdict import FAILURES

if TYPE_CHECKING:
    from schoolgate.banks.store import BankStore
    from schoolgate.pipeline.engine import Inspector
    from schoolgate.pipeline.verdict import Verdict

log = logging.getLogger(__name__)

OTHER = "other"  # a value outside the bounded vocabulary
NONE = "none"  # no value at all (no app, no media type)

DIRECTIONS = ("upload", "download")
DECISIONS = ("allow", "block", "monitor")  # monitor: would have blocked, recorded only
REASONS = ("bank_match", "classifier", *FAILURES)
PASS_REASONS = ("not_catalogued", "no_sni", "not_inspectable", "pinned", "starting")
REFUSE_REASONS = ("block_by_sni", "pinned", "no_sni", "sni_mismatch", "not_web", "tls_resumption",
                  "tls_renegotiation")  # fmt: skip
WEBHOOK_OUTCOMES = ("delivered", "http_4xx", "http_5xx", "timeout", "connection_error")
RELOAD_RESULTS = ("success", "failure")
MEDIA_TYPES = (*(t.value for t in MediaType), NONE)

MAX_BANKS = 64
MAX_MODELS = 16
MAX_SCORE_LABELS = 32  # (model, label) pairs: a detector model has a dozen or more labels
MAX_RECEIVERS = 16

SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


class BoundedLabel:
    """Maps free-form values onto a bounded set: the bound names, then up to `cap` more first
    seen, then "other". Thread-safe."""

    def __init__(self, cap: int = 0, known: Iterable[str] = ()) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset(known)
        self._seen: set[str] = set()

    def bind(self, known: Iterable[str]) -> None:
        """Replace the known names (a reloaded catalog or policy)."""
        with self._lock:
            self._known = frozenset(known)

    @property
    def known(self) -> frozenset[str]:
        return self._known

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        if value in self._known:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.cap:
                self._seen.add(value)
                return value
        return OTHER


def _choice(value: str | None, vocabulary: tuple[str, ...]) -> str:
    if not value:
        return NONE
    return value if value in vocabulary else OTHER


APPS = BoundedLabel()
GROUPS = BoundedLabel()
BANKS = BoundedLabel(cap=MAX_BANKS)
MODELS = BoundedLabel(cap=MAX_MODELS)
SCORE_LABELS = BoundedLabel(cap=MAX_SCORE_LABELS)
RECEIVERS = BoundedLabel(cap=MAX_RECEIVERS)

# -- metrics, declared once -------------------------------------------------------------------

# `_created` samples would double every counter's series for a value Prometheus does not use.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD_INFO = Info("schoolgate_build", "Versions of schoolgate, Python and mitmproxy.")
INSPECTIONS = Counter(
    "schoolgate_inspections_total",
    "Decisions on media items (or on requests that could not be inspected), by app, direction "
    "and decision: allow, block, or monitor (would have blocked; recorded only).",
    ["app", "direction", "decision"],
)
BLOCKS = Counter(
    "schoolgate_blocks_total",
    "Items blocked, by app, direction, policy group and primary reason "
    "(bank_match, classifier, or the failure kind a fail-closed policy blocked).",
    ["app", "direction", "group", "reason"],
)
INSPECTION_FAILURES = Counter(
    "schoolgate_inspection_failures_total",
    "Items that could not be fully inspected, by direction and failure kind "
    "(the group's fail policy then allowed or blocked them).",
    ["direction", "failure"],
)
BANK_MATCHES = Counter(
    "schoolgate_bank_matches_total",
    "Hash bank matches, by bank and signal type (an item can match several).",
    ["bank", "signal_type"],
)
CLASSIFIER_SCORES = Histogram(
    "schoolgate_classifier_score_ratio",
    "Classifier scores (0..1) by model and label.",
    ["model", "label"],
    buckets=SCORE_BUCKETS,
)
CLASSIFIER_DURATION = Histogram(
    "schoolgate_classifier_duration_seconds",
    "Time one model took on one image.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
INSPECTION_DURATION = Histogram(
    "schoolgate_inspection_duration_seconds",
    "Time from handing an item to the worker pool to its verdict (queueing included), by media "
    "type and direction.",
    ["media_type", "direction"],
    buckets=LATENCY_BUCKETS,
)
INSPECTED_BYTES = Counter(
    "schoolgate_inspected_bytes_total",
    "Bytes of media judged in the worker pool, by direction.",
    ["direction"],
)
INTERCEPTED = Counter(
    "schoolgate_intercepted_connections_total",
    "TLS connections decrypted for inspection (catalogued or learnt sharing hosts).",
)
PASSED_THROUGH = Counter(
    "schoolgate_passthrough_connections_total",
    "TLS connections passed through without decryption, by reason.",
    ["reason"],
)
REFUSED = Counter(
    "schoolgate_refused_connections_total",
    "TLS connections refused by SNI before any byte reached the server, by reason.",
    ["reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "schoolgate_webhook_attempts_total",
    "Alert webhook delivery attempts, by receiver and outcome "
    "(delivered, http_4xx, http_5xx, timeout, connection_error).",
    ["receiver", "outcome"],
)
CONFIG_RELOADS = Counter(
    "schoolgate_config_reloads_total",
    "Configuration reloads in a running proxy, by result (a failed one keeps the old config).",
    ["result"],
)
CONFIG_LAST_RELOAD_OK = Gauge(
    "schoolgate_config_last_reload_successful",
    "1 when the last configuration (re)load succeeded, 0 when it failed.",
)
CONFIG_LOADED_AT = Gauge(
    "schoolgate_config_last_reload_success_timestamp_seconds",
    "When the running configuration was loaded (Unix time).",
)
METRICS_ERRORS = Counter(
    "schoolgate_metrics_errors_total",
    "Errors inside metrics recording or collection (swallowed so inspection carries on).",
    ["where"],
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.info(
    {
        "version": _version("schoolgate"),
        "python": platform.python_version(),
        "mitmproxy": _version("mitmproxy"),
    }
)
for _direction in DIRECTIONS:
    INSPECTED_BYTES.labels(_direction)
    for _failure in FAILURES:
        INSPECTION_FAILURES.labels(_direction, _failure)
for _reason in PASS_REASONS:
    PASSED_THROUGH.labels(_reason)
for _reason in REFUSE_REASONS:
    REFUSED.labels(_reason)
for _result in RELOAD_RESULTS:
    CONFIG_RELOADS.labels(_result)

# -- recording ----------------------------------------------------------------------------------

_reported: set[str] = set()


def _failed(where: str) -> None:
    """Count a swallowed metrics error; log its traceback once per place, not per request."""
    try:
        METRICS_ERRORS.labels(where).inc()
        if where not in _reported:
            _reported.add(where)
            log.exception("metrics error in %s (further ones are only counted)", where)
    except Exception:  # metrics about metrics failing must not fail either
        pass


def never_raises[**P](fn: Callable[P, None]) -> Callable[P, None]:
    """Run a recorder; any exception is counted and logged instead of reaching the caller."""

    @functools.wraps(fn)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            _failed(fn.__name__)

    METRICS_ERRORS.labels(fn.__name__)  # at zero until something goes wrong
    return safe


def decision_of(verdict: Verdict) -> str:
    """allow, block, or monitor (would have blocked in block mode)."""
    if verdict.blocked:
        return "block"
    return "monitor" if verdict.would_block else "allow"


def reason_of(verdict: Verdict) -> str:
    """The one reason a blocked verdict is counted under: bank match, then classifier, then the
    failure kind; read from the policy's reasons so it names what actually blocked."""
    failure = verdict.findings.failure
    kinds = []
    for reason in verdict.reasons:
        if reason.startswith("bank "):
            kinds.append("bank_match")
        elif reason.startswith("classifier "):
            kinds.append("classifier")
        elif reason.startswith("could not inspect: ") and reason.endswith("fail-block"):
            kinds.append(failure or "error")
    for kind in ("bank_match", "classifier"):
        if kind in kinds:
            return kind
    return _choice(kinds[0] if kinds else None, REASONS)


@never_raises
def observe_verdict(verdict: Verdict) -> None:
    """Count one decision: its app, outcome, reason, bank matches and classifier scores."""
    ctx = verdict.context
    app = APPS(ctx.app)
    direction = _choice(ctx.direction, DIRECTIONS)
    INSPECTIONS.labels(app, direction, decision_of(verdict)).inc()
    if verdict.blocked:
        BLOCKS.labels(app, direction, GROUPS(verdict.group), reason_of(verdict)).inc()
    findings = verdict.findings
    if findings.failure is not None:
        INSPECTION_FAILURES.labels(direction, _choice(findings.failure, FAILURES)).inc()
    for match in findings.matches:
        BANK_MATCHES.labels(BANKS(match.bank), str(match.signal_type)).inc()
    for result in findings.scores:
        model = MODELS(result.model)
        CLASSIFIER_DURATION.labels(model).observe(result.elapsed_ms / 1000)
        for label, score in result.scores.items():
            pair = SCORE_LABELS(f"{model}/{label}")
            label_value = OTHER if pair == OTHER else label
            CLASSIFIER_SCORES.labels(model, label_value).observe(score)


@never_raises
def observe_inspection(verdict: Verdict, seconds: float) -> None:
    """Latency and size of an item judged in the worker pool."""
    direction = _choice(verdict.context.direction, DIRECTIONS)
    media_type = _choice(verdict.findings.media_type, MEDIA_TYPES)
    INSPECTION_DURATION.labels(media_type, direction).observe(seconds)
    size = verdict.findings.size if verdict.findings.size is not None else verdict.context.size
    if size:
        INSPECTED_BYTES.labels(direction).inc(size)


@never_raises
def connection_intercepted() -> None:
    INTERCEPTED.inc()


@never_raises
def connection_passed_through(reason: str) -> None:
    PASSED_THROUGH.labels(_choice(reason, PASS_REASONS)).inc()


@never_raises
def connection_refused(reason: str) -> None:
    REFUSED.labels(_choice(reason, REFUSE_REASONS)).inc()


@never_raises
def config_loaded(success: bool, *, reload: bool = True) -> None:
    """A configuration load; `reload=False` for the first one at start-up."""
    if reload:
        CONFIG_RELOADS.labels("success" if success else "failure").inc()
    CONFIG_LAST_RELOAD_OK.set(1 if success else 0)
    if success:
        CONFIG_LOADED_AT.set_to_current_time()


@never_raises
def declare_webhook_receivers(receivers: Iterable[str]) -> None:
    """Create every outcome's series at zero for these receivers, before the first attempt."""
    for receiver in receivers:
        name = RECEIVERS(receiver)
        for outcome in WEBHOOK_OUTCOMES:
            WEBHOOK_ATTEMPTS.labels(name, outcome)


@never_raises
def webhook_attempt(receiver: str, outcome: str) -> None:
    """One webhook delivery attempt; `outcome` is one of WEBHOOK_OUTCOMES."""
    if outcome not in WEBHOOK_OUTCOMES:
        raise ValueError(f"unknown webhook outcome {outcome!r}; expected one of {WEBHOOK_OUTCOMES}")
    name = RECEIVERS(receiver)
    for each in WEBHOOK_OUTCOMES:  # the first attempt creates all of the receiver's series
        WEBHOOK_ATTEMPTS.labels(name, each)
    WEBHOOK_ATTEMPTS.labels(name, outcome).inc()


# -- state read at scrape time ------------------------------------------------------------------


class OutboxStatsLike(Protocol):
    """What the alert outbox reports: undelivered alerts, the oldest one's age, dead letters."""

    @property
    def pending(self) -> int: ...

    @property
    def oldest_pending_age_s(self) -> float: ...

    @property
    def dead(self) -> int: ...


@dataclass(frozen=True)
class _Inspection:
    """What the running proxy exposes at scrape time."""

    owner: object
    inspector: Inspector
    queue_depth: Callable[[], int]
    queue_capacity: int


class _BankSizes:
    """Per-bank sizes, re-counted only when the store's version moves (counting 10 M rows on
    every scrape would cost seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._rows: list[tuple[str, dict[str, int], float]] = []

    def read(self, store: BankStore) -> list[tuple[str, dict[str, int], float]]:
        key = (id(store), store.version())
        with self._lock:
            if key != self._key:
                self._rows = [
                    (
                        bank.name,
                        {str(t): n for t, n in bank.counts.items()},
                        bank.updated_at.timestamp(),
                    )
                    for bank in store.banks()
                ]
                self._key = key
            return self._rows


class StateCollector(Collector):
    """Gauges read when Prometheus scrapes: worker-pool queue, banks, models, alert outbox.

    Each source is read on its own; one that fails is counted and left out, the rest still show.
    """

    PARTS = ("_pool", "_bank_gauges", "_subscriptions", "_models", "_audit", "_alert_outbox")

    def __init__(self) -> None:
        for part in self.PARTS:
            METRICS_ERRORS.labels(f"collect{part}")
        self._inspection: _Inspection | None = None
        self._outbox: Callable[[], OutboxStatsLike] | None = None
        self._held: Callable[[], tuple[int, int]] | None = None
        self._banks = _BankSizes()

    def bind_inspection(self, binding: _Inspection) -> None:
        self._inspection = binding

    def release_inspection(self, owner: object) -> None:
        current = self._inspection
        if current is not None and current.owner is owner:
            self._inspection = None

    def bind_outbox(
        self,
        stats: Callable[[], OutboxStatsLike] | None,
        held: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self._outbox = stats
        self._held = held

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with what is bound; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        for name in self.PARTS:
            try:
                yield from list(getattr(self, name)())
            except Exception:
                _failed(f"collect{name}")

    def _pool(self) -> Iterator[Metric]:
        binding = self._inspection
        if binding is None:
            return
        yield GaugeMetricFamily(
            "schoolgate_inspection_queue_depth",
            "Items in the worker pool, queued or running (timed-out ones until they finish).",
            value=binding.queue_depth(),
        )
        yield GaugeMetricFamily(
            "schoolgate_inspection_queue_capacity",
            "Items the worker pool holds before new ones are an overload (workers + max_queue).",
            value=binding.queue_capacity,
        )

    def _bank_gauges(self) -> Iterator[Metric]:
        binding = self._inspection
        if binding is None:
            return
        sizes = GaugeMetricFamily(
            "schoolgate_bank_hashes",
            "Hashes in each bank, by signal type.",
            labels=["bank", "signal_type"],
        )
        updated = GaugeMetricFamily(
            "schoolgate_bank_updated_timestamp_seconds",
            "When each bank last changed (Unix time).",
            labels=["bank"],
        )
        totals: dict[tuple[str, str], int] = {}
        latest: dict[str, float] = {}
        for name, counts, updated_at in self._banks.read(binding.inspector.store):
            bank = BANKS(name)
            latest[bank] = max(latest.get(bank, 0.0), updated_at)
            for signal_type, count in counts.items():
                totals[bank, signal_type] = totals.get((bank, signal_type), 0) + count
                BANK_MATCHES.labels(bank, signal_type)  # at zero before the first match
        for (bank, signal_type), count in sorted(totals.items()):
            sizes.add_metric([bank, signal_type], count)
        for bank, when in sorted(latest.items()):
            updated.add_metric([bank], when)
        yield sizes
        yield updated

    def _subscriptions(self) -> Iterator[Metric]:
        """The trust's bank subscriptions, as the last sync left them (schoolgate.trust)."""
        binding = self._inspection
        if binding is None:
            return
        from schoolgate.trust.bundle import REFUSALS
        from schoolgate.trust.replica import read_states

        label = ["subscription"]
        version = GaugeMetricFamily(
            "schoolgate_bank_subscription_version",
            "The publisher's version of the banks applied.",
            labels=label,
        )
        published = GaugeMetricFamily(
            "schoolgate_bank_subscription_published_timestamp_seconds",
            "When the publisher made the version applied (Unix time).",
            labels=label,
        )
        checked = GaugeMetricFamily(
            "schoolgate_bank_subscription_checked_timestamp_seconds",
            "When the gateway last asked the publisher, whatever the outcome (Unix time).",
            labels=label,
        )
        synced = GaugeMetricFamily(
            "schoolgate_bank_subscription_synced_timestamp_seconds",
            "When a sync last ended well: the publisher's current version verified, and applied "
            "or already in place (Unix time).",
            labels=label,
        )
        failed = CounterMetricFamily(
            "schoolgate_bank_subscription_fetch_failed",
            "Syncs whose fetch failed (publisher unreachable, not found, too large, too slow).",
            labels=label,
        )
        refused = CounterMetricFamily(
            "schoolgate_bank_subscription_refused",
            "Bundles refused (tampered, unsigned, replayed, ...), by reason; the last good banks "
            "stayed in use.",
            labels=["subscription", "reason"],
        )
        for state in read_states(binding.inspector.store):
            # 0 until a version is applied, and every reason from 0: a gateway that never got
            # the trust's banks is behind, and a first refusal is an increase (a26 M1, M2).
            version.add_metric([state.name], state.version or 0)
            if state.published_at is not None:
                published.add_metric([state.name], state.published_at)
            if state.checked_at is not None:
                checked.add_metric([state.name], state.checked_at)
            if state.synced_at is not None:
                synced.add_metric([state.name], state.synced_at)
            failed.add_metric([state.name], state.fetch_failures)
            for reason in REFUSALS:
                refused.add_metric([state.name, reason], state.refusals.get(reason, 0))
        yield from (version, published, checked, synced, failed, refused)

    def _models(self) -> Iterator[Metric]:
        binding = self._inspection
        if binding is None:
            return
        classifier = binding.inspector.classifier
        states: Mapping[str, bool] = classifier.model_states() if classifier is not None else {}
        loaded = GaugeMetricFamily(
            "schoolgate_model_loaded",
            "1 when an enabled classifier model is loaded, 0 when it failed to load.",
            labels=["model"],
        )
        for model, ok in sorted(states.items()):
            loaded.add_metric([MODELS(model)], 1 if ok else 0)
        yield loaded

    def _audit(self) -> Iterator[Metric]:
        binding = self._inspection
        if binding is None or binding.inspector.audit is None:
            return
        # Counted by the running audit log (a reload starts a new one: Prometheus sees a reset).
        yield CounterMetricFamily(
            "schoolgate_audit_lost_records",
            "Audit log lines that could not be written (full disk, removed directory); the "
            "decisions themselves were still made and enforced.",
            value=binding.inspector.audit.lost_records,
        )

    def _alert_outbox(self) -> Iterator[Metric]:
        stats_fn = self._outbox
        up = GaugeMetricFamily(
            "schoolgate_alert_outbox_up",
            "1 when the alert outbox's state was read at this scrape; 0 when no outbox is wired "
            "in (no alerts can be delivered) or reading it failed.",
        )
        if stats_fn is None:
            stats: tuple[float, float, float] | None = (0, 0, 0)  # no outbox: nothing is pending
        else:
            try:
                got = stats_fn()
                stats = (float(got.pending), float(got.oldest_pending_age_s), float(got.dead))
            except Exception:
                _failed("collect_alert_outbox")
                stats = None
        up.add_metric([], 1 if stats_fn is not None and stats is not None else 0)
        yield up
        if stats is None:
            return
        pending, oldest, dead = stats
        yield GaugeMetricFamily(
            "schoolgate_alert_outbox_pending",
            "Alerts waiting in the outbox for delivery.",
            value=pending,
        )
        yield GaugeMetricFamily(
            "schoolgate_alert_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered alert (0 when none is pending).",
            value=oldest,
        )
        yield GaugeMetricFamily(
            "schoolgate_alert_outbox_dead",
            "Alerts that exhausted their retries and were not delivered.",
            value=dead,
        )
        try:
            unwritten, memory_only = self._held() if self._held is not None else (0, 0)
        except Exception:
            _failed("collect_alert_held")
            return
        yield GaugeMetricFamily(
            "schoolgate_alert_unwritten",
            "Alerts the outbox could not take (a full or failing disk), held until it can: in "
            "a spool file where one took them, else in memory only.",
            value=unwritten,
        )
        yield GaugeMetricFamily(
            "schoolgate_alert_memory_only",
            "Of those, alerts no spool took either: lost if the process stops now.",
            value=memory_only,
        )


STATE = StateCollector()
REGISTRY.register(STATE)


@never_raises
def bind_runtime(
    owner: object,
    inspector: Inspector,
    *,
    apps: Iterable[str],
    queue_depth: Callable[[], int],
    queue_capacity: int,
) -> None:
    """Point the scrape-time gauges and label bounds at a (re)loaded proxy runtime."""
    APPS.bind(apps)
    GROUPS.bind(group.name for group in inspector.config.policy.groups)
    MODELS.bind(spec.name for spec in inspector.config.classifier.models)
    # Series that exist at zero make the first event visible to rate() and increase(): the first
    # bank match of an app and group must not vanish from the safeguarding dashboard.
    for app in (*APPS.known, OTHER, NONE):
        for direction in DIRECTIONS:
            for decision in DECISIONS:
                INSPECTIONS.labels(app, direction, decision)
            for group in GROUPS.known:
                for reason in ("bank_match", "classifier"):
                    BLOCKS.labels(app, direction, group, reason)
    STATE.bind_inspection(_Inspection(owner, inspector, queue_depth, queue_capacity))


def release_runtime(owner: object) -> None:
    """Stop reading a closed runtime, unless a newer one has already replaced it."""
    STATE.release_inspection(owner)


def bind_alert_outbox(
    stats: Callable[[], OutboxStatsLike], held: Callable[[], tuple[int, int]] | None = None
) -> None:
    """Read the alert outbox's state at every scrape, and with `held` the alerts it could not
    take yet (all, and those in memory only); a failing read is tolerated."""
    STATE.bind_outbox(stats, held)
