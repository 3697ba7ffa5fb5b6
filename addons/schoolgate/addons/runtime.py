"""What every schoolgate addon shares: config, inspector, catalog, device identity, worker pool."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from schoolgate.addons.heldbudget import HeldBudget
from schoolgate.addons.pool import InspectionPool, InspectTimeout, Overloaded
from schoolgate.config import Config
from schoolgate.endpoints.catalog import Catalog, LearntHosts
from schoolgate.endpoints.loader import load_catalog
from schoolgate.endpoints.reassembly import UploadSessions
from schoolgate.gateway.addressbook import ADDRESS_BOOK, AddressBook, fronting_unchecked
from schoolgate.gateway.leases import LeaseTable
from schoolgate.gateway.neighbours import NeighbourTable, vlan_of
from schoolgate.media.sniff import MediaKind, sniff
from schoolgate.monitoring import metrics
from schoolgate.pipeline.engine import Inspector
from schoolgate.pipeline.verdict import InspectionContext, Verdict

log = logging.getLogger("schoolgate.proxy")


@dataclass
class Runtime:
    """Built once per configuration; addons read it through a `RuntimeRef`."""

    config: Config
    inspector: Inspector
    catalog: Catalog
    pool: InspectionPool
    learnt: LearntHosts = field(default_factory=LearntHosts)
    sessions: UploadSessions = field(default_factory=UploadSessions)
    leases: tuple[LeaseTable, ...] = ()
    neighbours: NeighbourTable | None = None  # the gateway's own (transparent mode only)
    address_book: AddressBook | None = None  # the gateway resolver's answers (when it runs)
    held: HeldBudget = field(default_factory=lambda: HeldBudget(512 << 20, 128 << 20))
    counters: Counter[str] = field(default_factory=Counter)
    closed: bool = False
    busy: int = 0  # judge() calls in progress (event-loop only, so no lock)
    _counter_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        """Load the catalog and the inspector (banks, models, audit log); raises on bad config."""
        catalog = load_catalog(list(config.proxy.endpoints_files))
        inspector = Inspector.from_config(config)
        proxy = config.proxy
        # Videos at once: as many as there are cores for their decoders' threads.
        heavy = max(1, (os.cpu_count() or 1) // max(1, config.limits.video.decode_threads))
        pool = InspectionPool(proxy.workers, proxy.max_queue, proxy.inspect_timeout_s,
                              proxy.max_wait_s, heavy, config.video_inspect_s)  # fmt: skip
        cap = config.proxy.max_held_body_bytes
        sessions = UploadSessions(max_session_bytes=cap, max_total_bytes=max(cap, 4 * cap))
        leases = tuple(LeaseTable(path) for path in config.proxy.dhcp_leases)
        if inspector.alerts is not None:
            alerts = inspector.alerts
            # Outbox depth and delivery outcomes feed the IT dashboards and alert rules.
            metrics.bind_alert_outbox(alerts.outbox.stats, alerts.held)
            metrics.declare_webhook_receivers(config.alerts.channel_names)
            alerts.sender.on_attempt = metrics.webhook_attempt
            alerts.start()  # deliver alerts to the DSL in the background
        runtime = cls(
            config=config,
            inspector=inspector,
            catalog=catalog,
            pool=pool,
            sessions=sessions,
            leases=leases,
            # Only on the gateway are clients link-layer neighbours; an explicit proxy's are not.
            neighbours=NeighbourTable() if config.proxy.mode == "transparent" else None,
            address_book=_address_book(config),
            held=HeldBudget(config.proxy.max_held_total_bytes, config.proxy.max_held_device_bytes),
        )
        metrics.bind_runtime(
            runtime,
            inspector,
            apps=[app.name for app in catalog.apps],
            queue_depth=lambda: pool.in_flight,
            queue_capacity=pool.capacity,
        )
        return runtime

    def context(
        self,
        client_ip: str | None,
        *,
        app: str | None,
        host: str | None,
        route: str | None,
        direction: str = "upload",
    ) -> InspectionContext:
        """An inspection context for a client: its MAC and interface (VLAN) as the gateway's
        neighbour table shows them, its hostname from the DHCP leases, and whether its address
        was leased to that MAC (a hand-set address is not)."""
        mac = hostname = None
        vlan: int | None = None
        leased: bool | None = None
        if client_ip:
            neighbour = self.neighbours.lookup(client_ip) if self.neighbours else None
            lease = next(
                (found for t in self.leases if (found := t.lookup(client_ip)) is not None), None
            )
            if neighbour is not None:
                mac = neighbour.mac
                vlan = vlan_of(neighbour.interface, self.config.gateway.vlan_parent)
                if self.leases:
                    leased = lease is not None and lease.mac == neighbour.mac
            if lease is not None and leased is not False:
                mac, hostname = mac or lease.mac, lease.hostname
        return InspectionContext(
            client_ip=client_ip,
            app=app,
            host=host,
            route=route,
            direction=direction,
            mac=mac,
            hostname=hostname,
            vlan=vlan,
            address_leased=leased,
        )

    def count(self, name: str, n: int = 1) -> None:
        """Bump an in-process counter (surfaced in logs and tests)."""
        with self._counter_lock:
            self.counters[name] += n

    def note(self, event: str, ctx: InspectionContext, **fields: object) -> None:
        """Audit an event that is not a decision (a body with no media on an upload route)."""
        identity = {
            "client_ip": ctx.client_ip,
            "mac": ctx.mac,
            "app": ctx.app,
            "host": ctx.host,
            "route": ctx.route,
        }
        present = {key: value for key, value in identity.items() if value is not None}
        try:
            if self.inspector.audit is not None:
                self.inspector.audit.event(event, **present, **fields)
        except Exception:
            log.exception("could not audit %s", event)

    def unavailable(
        self,
        ctx: InspectionContext,
        failure: str,
        detail: str,
        action: str | None = None,
        data: bytes | None = None,
    ) -> Verdict:
        """A fail-policy verdict (or `action`, when the proxy already acted), recorded and
        counted; with `data`, its digests recorded and looked up (call off the event loop)."""
        self.count(f"unavailable_{failure}")
        verdict = self.inspector.evaluate_unavailable(ctx, failure, detail, action, data)
        self.record(verdict)
        return verdict

    async def unjudged(
        self, data: bytes, ctx: InspectionContext, failure: str, detail: str
    ) -> Verdict:
        """`unavailable` for an item no worker judged (overload, timeout): its digests are
        computed in a thread (a 64 MiB body takes a few hundred ms), and a banked file itself is
        still a match (a60 F3: blocked as `overload` with no hashes and no alert)."""
        return await asyncio.to_thread(self.unavailable, ctx, failure, detail, None, data)

    async def judge(self, data: bytes, ctx: InspectionContext) -> Verdict:
        """Evaluate one item in the pool; overload, timeout and bugs become fail-policy verdicts."""
        self.busy += 1  # a reload retires this runtime only once nothing is being judged
        try:
            return await self._judge(data, ctx)
        finally:
            self.busy -= 1

    async def _judge(self, data: bytes, ctx: InspectionContext) -> Verdict:
        ctx = ctx if ctx.size is not None else replace(ctx, size=len(data))
        started = time.perf_counter()
        try:
            device = ctx.mac or ctx.client_ip or ""
            heavy = sniff(data).kind is MediaKind.VIDEO
            verdict = await self.pool.run(self.inspector.evaluate, data, ctx, key=device,
                                          heavy=heavy)  # fmt: skip
        except Overloaded as exc:
            return await self.unjudged(data, ctx, "overload", str(exc))
        except InspectTimeout as exc:
            return await self.unjudged(data, ctx, "timeout", str(exc))
        except Exception as exc:  # a bug must become a decision, never a lost one
            log.exception("inspection crashed")
            return self.unavailable(ctx, "error", type(exc).__name__)
        metrics.observe_inspection(verdict, time.perf_counter() - started)
        self.record(verdict)
        return verdict

    async def judge_partial(self, data: bytes, ctx: InspectionContext) -> Verdict | None:
        """Evaluate the first part of an unfinished upload: its verdict, recorded, when a bank
        matches what it shows; None otherwise (nothing recorded: a part is not refused for
        being a part, and a failure here leaves the whole upload to be judged at its end)."""
        self.busy += 1
        try:
            device = ctx.mac or ctx.client_ip or ""
            ctx = replace(ctx, size=len(data))
            heavy = sniff(data).kind is MediaKind.VIDEO
            verdict = await self.pool.run(self.inspector.evaluate, data, ctx, key=device,
                                          heavy=heavy)  # fmt: skip
        except Exception:  # overload, timeout or a bug: the end of the upload is still judged
            log.warning("schoolgate: the first part of an upload could not be looked at")
            return None
        finally:
            self.busy -= 1
        if not (verdict.blocked and verdict.matches):
            return None
        self.record(verdict)
        return verdict

    def record(self, verdict: Verdict) -> None:
        """Audit one decision; a failing audit log is logged loudly but never drops the decision."""
        self.count("blocked" if verdict.blocked else "allowed")
        metrics.observe_verdict(verdict)  # never raises
        try:
            self.inspector.record(verdict)
        except Exception:
            log.exception("could not record decision %s", verdict.id)

    @property
    def idle(self) -> bool:
        """No judgement in progress and no item left in the pool."""
        return self.busy == 0 and self.pool.in_flight == 0

    async def retire(self, timeout_s: float, quiet_s: float = 0.5) -> bool:
        """Close once idle for `quiet_s` (in-flight inspections finish and are recorded), or at
        `timeout_s`; True if it went idle. The quiet period covers flows that fetched this runtime
        just before a swap and start judging on a later event-loop turn."""
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if not self.idle:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                break
            await asyncio.sleep(0.05)
        drained = self.idle
        if not drained:
            log.warning(
                "closing the previous configuration with %d inspection(s) still running",
                self.busy or self.pool.in_flight,
            )
        await asyncio.to_thread(self.close)
        return drained

    def close(self) -> None:
        """Stop the pool and close banks and audit log; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        metrics.release_runtime(self)
        self.pool.shutdown()
        self.inspector.close()
        if self.address_book is not None:
            self.address_book.close()


def _address_book(config: Config) -> AddressBook | None:
    """The resolver's address book, where it runs beside a transparent proxy (a warning in the
    log where domain fronting goes unchecked)."""
    transparent = config.proxy.mode == "transparent"
    book = None
    if config.resolver.enabled and transparent:
        book = AddressBook(config.data_dir / ADDRESS_BOOK, min_ttl_s=config.resolver.min_ttl_s)
    refuse = config.proxy.sni_mismatch == "refuse"
    if (unchecked := fronting_unchecked(transparent, refuse, book)) is not None:
        log.warning("schoolgate: WARNING: %s", unchecked)
    return book


class RuntimeRef:
    """A mutable slot the addons share, so a reconfigure swaps everything at once."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.current: Runtime | None = runtime

    def get(self) -> Runtime:
        if self.current is None:
            raise RuntimeError("schoolgate is not configured yet")
        return self.current

    def swap(self, runtime: Runtime) -> Runtime | None:
        """Install `runtime` in one assignment (addons see old or new, never a mix); the previous
        one is returned for the caller to retire."""
        previous, self.current = self.current, runtime
        return previous
