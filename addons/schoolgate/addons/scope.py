"""Scope: decrypt only catalogued sharing hosts; pass everything else through untouched.

Decisions are taken from the TLS ClientHello's SNI, so nothing outside the catalog is ever
decrypted. Apps that cannot be inspected (end-to-end encrypted media, certificate pinning) get
their catalog action instead: refused by SNI, or passed through with a metadata-only audit record.

Refused handshakes switch nothing off for an `inspection: full` app: its connections simply fail
(a pupil could otherwise turn inspection off by refusing our certificate three times). For a
`pinned_native` app, a device whose client refuses our certificate gets the app's
`when_not_inspectable` action for that host, keyed on the refusing client's JA4 fingerprint, so
a browser on the same device stays inspected; entries expire, and each is audited and counted.

TLS that names no server (a catalogued service reached by its address) cannot be attributed to
an app, so it is refused before any byte leaves (`proxy.tls_without_sni`, default refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Final

from mitmproxy import ctx, exceptions, tls
from mitmproxy.addonmanager import Loader
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import TransparentMode

from schoolgate.addons.fingerprint import ja4
from schoolgate.addons.passthrough import WatchedPassThrough
from schoolgate.addons.runtime import RuntimeRef
from schoolgate.endpoints.hosts import normalize_host
from schoolgate.endpoints.tenants import sign_in_only
from schoolgate.monitoring import metrics
from schoolgate.sniffer.sessionfile import (
    JOURNAL_EVERY_S,
    SessionKeeper,
    fast_path_sessions,
    proxy_sessions,
)
from schoolgate.sniffer.tlshello import Malformed, complete_client_hello
from schoolgate.sniffer.tlsresume import ResumeCheck, SessionBook
from schoolgate.sniffer.tlsretry import RetryWatch, Verdict

log = logging.getLogger("schoolgate.proxy")

# Per-(client, SNI, fingerprint) tallies are bounded so a scan of random names cannot grow memory.
MAX_TRACKED = 10_000
UNNAMED_LOG_INTERVAL_S = 3600.0

type PinKey = tuple[str, str, str]  # client address, host, JA4 of the refusing client


class RefuseLayer(layer.Layer):
    """Closes the client connection before any byte reaches the server (block by SNI)."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._closed = False

    def _handle_event(self, event: events.Event) -> Generator[commands.Command, object, None]:
        if not self._closed:
            self._closed = True
            yield commands.CloseConnection(self.context.client)


# An HTTP/1 request line (any method token) or the HTTP/2 preface, and what can start one.
_HTTP_START: Final = re.compile(
    rb"\A(?:[A-Za-z-]{1,20} \S{1,8192} HTTP/\d\.\d\r?\n|PRI \* HTTP/2\.0)"
)
_HTTP_PREFIX: Final = re.compile(
    rb"\A(?:[A-Za-z-]{1,20}(?: \S*(?: H(?:T(?:T(?:P(?:/\d?(?:\.\d?)?)?)?)?)?\r?)?)?"
    rb"|P(?:R(?:I(?: (?:\* ?)?)?)?)?)"
)
_HTTP_LINE_MAX: Final = 8192


def client_ip(context: Context) -> str | None:
    peer = context.client.peername
    return str(peer[0]) if peer else None


def destination_ip(context: Context) -> str | None:
    """Where the client's connection was going (transparent mode: its original destination)."""
    server = context.server.address
    return str(server[0]) if server else None


class Scope:
    """Chooses intercept, pass-through or refuse for every TLS connection."""

    def __init__(self, ref: RuntimeRef, clock: Callable[[], float] = time.monotonic) -> None:
        self.ref = ref
        self.clock = clock
        self.failures: OrderedDict[PinKey, int] = OrderedDict()
        self.pinned: OrderedDict[PinKey, tuple[str, float]] = OrderedDict()  # action, expiry
        self.prints: OrderedDict[str, str] = OrderedDict()  # client connection id -> JA4
        self.unnamed_logged: OrderedDict[str, float] = OrderedDict()  # client -> last log time
        self.sessions = SessionBook()  # TLS <= 1.2 sessions issued through the pass-through
        self.keeper: SessionKeeper | None = None  # and on disk, across restarts
        self._books: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "schoolgate_pinned_after",
            int,
            3,
            "Handshakes one TLS client (JA4) of a device may refuse for a pinned_native app's "
            "host before that client gets the app's when_not_inspectable action; 0 never.",
        )
        loader.add_option(
            "schoolgate_pinned_ttl",
            float,
            86400.0,
            "Seconds a pinned client keeps its pass-through (or refusal) before it is tried again.",
        )

    def configure(self, updated: set[str]) -> None:
        if "schoolgate_pinned_after" in updated and ctx.options.schoolgate_pinned_after < 0:
            raise exceptions.OptionsError("schoolgate_pinned_after must be 0 or more")  # type: ignore[no-untyped-call]

    def running(self) -> None:
        runtime = self.ref.current
        if runtime is None or self.keeper is not None:
            return
        data_dir = Path(runtime.config.data_dir)
        own, peer = proxy_sessions(data_dir), fast_path_sessions(data_dir)
        self.keeper = SessionKeeper(self.sessions, own, peer=peer, clock=self.clock)
        self.keeper.load()
        with contextlib.suppress(RuntimeError):  # no loop: a test drives the addon by hand
            self._books = asyncio.get_running_loop().create_task(self._keep_books(self.keeper))

    async def _keep_books(self, keeper: SessionKeeper) -> None:
        """Write the book in turn and read the fast path's when it changed, off the loop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(JOURNAL_EVERY_S)
            try:
                if keeper.due():
                    await loop.run_in_executor(None, keeper.save)
                else:
                    await loop.run_in_executor(None, keeper.flush_journal)
                if keeper.peer_due():
                    await loop.run_in_executor(None, keeper.refresh)
            except Exception:  # a bug must not end the book-keeping for good
                log.exception("schoolgate: keeping the TLS session books failed")

    def done(self) -> None:
        if self._books is not None:
            self._books.cancel()
        if self.keeper is not None:
            self.keeper.save()

    def pinned_action(self, key: PinKey) -> str | None:
        """The action a pinned client has for a host, while it lasts."""
        entry = self.pinned.get(key)
        if entry is None:
            return None
        action, expires_at = entry
        if expires_at <= self.clock():
            del self.pinned[key]
            return None
        return action

    def decide(
        self,
        sni: str | None,
        client: str | None,
        fingerprint: str = "",
        destination: str | None = None,
    ) -> str:
        """'intercept', 'pass', 'pass_log' or 'block' for one ClientHello."""
        runtime = self.ref.get()
        if not sni:
            # No name, no app: never decrypt what we cannot attribute, and never let it past.
            return "block" if runtime.config.proxy.tls_without_sni == "refuse" else "pass"

        host = normalize_host(sni)
        app = runtime.catalog.app_for_host(host)
        if app is None:
            if runtime.learnt.get(host) is not None:
                return "intercept"
            return "block" if self.fronted(host, destination) else "pass"
        if app.inspection == "none":
            return "block" if app.when_not_inspectable == "block_by_sni" else "pass_log"
        if sign_in_only(host, runtime.config.tenants):
            return "pass"
        if app.inspection == "pinned_native":
            pinned = self.pinned_action((client or "", host, fingerprint))
            if pinned is not None:
                return "block" if pinned == "block" else "pass_log"
        return "intercept"

    def fronted(self, host: str, destination: str | None) -> bool:
        """Whether an uncatalogued server name goes to an address that the gateway's resolver
        gave out for catalogued hosts and never for this name (domain fronting: the name of a
        site we pass, the address and the Host of a sharing app). An address that served both
        (a shared front end, as Google's and Meta's are) is not fronting we can tell apart."""
        runtime = self.ref.get()
        book = runtime.address_book
        if book is None or destination is None or runtime.config.proxy.sni_mismatch == "pass":
            return False
        names = book.names_for(destination)
        if not names or host in names:
            return False
        return any(runtime.catalog.app_for_host(name) is not None for name in names)

    def why_not_intercepted(self, sni: str | None, client: str | None) -> str:
        """The metrics reason for a pass-through or refusal (one of metrics.PASS_REASONS)."""
        if not sni:
            return "no_sni"
        host = normalize_host(sni)
        if any(key[:2] == (client or "", host) for key in self.pinned):
            return "pinned"
        if self.ref.get().catalog.app_for_host(host) is None:
            return "not_catalogued"
        return "not_inspectable"

    def _record(self, context: Context, sni: str, detail: str, action: str) -> None:
        """Audit a connection that was not inspected; `action` is what was done to it, so a
        refusal reads as a block, whatever the group's fail policy for not_inspectable says."""
        runtime = self.ref.get()
        app = runtime.catalog.app_for_host(sni)
        ip = client_ip(context)
        ictx = runtime.context(ip, app=app.name if app else None, host=sni, route="tls")
        runtime.unavailable(ictx, "not_inspectable", detail, action=action)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """Refuse block-by-SNI connections before the handshake goes anywhere."""
        if nextlayer.layer is None or self.ref.current is None:
            return
        data = nextlayer.data_client()  # type: ignore[no-untyped-call]
        if nextlayer.context.client.tls_established:
            return
        if not starts_like_tls_record(data):
            self._only_web(nextlayer, data)
            return
        try:
            hello = parse_client_hello(data)
        except ValueError:
            return  # not TLS after all; mitmproxy's own layers report it
        if hello is None:
            nextlayer.layer = None  # wait for the whole ClientHello before deciding
            return
        fingerprint = ja4(hello)
        destination = destination_ip(nextlayer.context)
        decision = self.decide(hello.sni, client_ip(nextlayer.context), fingerprint, destination)
        if decision in ("pass", "pass_log"):
            self._pass_watched(nextlayer, data, fingerprint, decision, hello.sni)
            return
        if decision != "block":
            return
        if hello.sni and self.fronted(normalize_host(hello.sni), destination):
            self.ref.get().count("refused_sni_mismatch")
            metrics.connection_refused("sni_mismatch")
            detail = f"server name not given out for {destination} (which serves catalogued hosts)"
            self._record(nextlayer.context, normalize_host(hello.sni), detail, "block")
        elif not hello.sni:
            self.ref.get().count("refused_without_sni")
            metrics.connection_refused("no_sni")
            self._note_unnamed(nextlayer.context)
        else:
            self.ref.get().count("refused_by_sni")
            why = self.why_not_intercepted(hello.sni, client_ip(nextlayer.context))
            metrics.connection_refused("pinned" if why == "pinned" else "block_by_sni")
            self._record(nextlayer.context, normalize_host(hello.sni), "refused by SNI", "block")
        nextlayer.layer = RefuseLayer(nextlayer.context)

    def _only_web(self, nextlayer: layer.NextLayer, data: bytes) -> None:
        """On the gateway, ports 80 and 443 carry TLS or HTTP. Anything else there (an SSH or a
        VPN tunnel, a server that speaks first) was relayed unread: it is refused."""
        if not isinstance(nextlayer.context.client.proxy_mode, TransparentMode):
            return
        if not data:
            if nextlayer.data_server():  # type: ignore[no-untyped-call]
                self._refuse_stream(nextlayer, "a server that speaks first")
            return
        if _HTTP_START.match(data):
            return
        if len(data) < _HTTP_LINE_MAX and _HTTP_PREFIX.fullmatch(data):
            nextlayer.layer = None  # a request line still arriving: wait for more
            return
        self._refuse_stream(nextlayer, "neither TLS nor HTTP")

    def _refuse_stream(self, nextlayer: layer.NextLayer, what: str) -> None:
        self.ref.get().count("refused_not_web")
        metrics.connection_refused("not_web")
        server = nextlayer.context.server.address
        log.warning(
            "%s sent %s to %s on a web port: refused",
            client_ip(nextlayer.context) or "unknown",
            what,
            f"{server[0]}:{server[1]}" if server else "an unknown address",
        )
        nextlayer.layer = RefuseLayer(nextlayer.context)

    def _note_unnamed(self, context: Context) -> None:
        """Log a refused connection without a server name, once per device an hour (a device
        retrying by address would otherwise fill the log)."""
        ip = client_ip(context) or "unknown"
        now = self.clock()
        if self.unnamed_logged.get(ip, float("-inf")) > now - UNNAMED_LOG_INTERVAL_S:
            return
        self.unnamed_logged[ip] = now
        while len(self.unnamed_logged) > MAX_TRACKED:
            self.unnamed_logged.popitem(last=False)
        server = context.server.address
        log.warning(
            "%s opened TLS without a server name (to %s): refused (proxy.tls_without_sni)",
            ip,
            f"{server[0]}:{server[1]}" if server else "an unknown address",
        )

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass through anything not catalogued (or not inspectable) without decrypting it."""
        if self.ref.current is None:
            data.ignore_connection = True
            metrics.connection_passed_through("starting")
            return
        sni = data.client_hello.sni
        fingerprint = ja4(data.client_hello)
        self._remember(data.context, fingerprint)
        decision = self.decide(
            sni, client_ip(data.context), fingerprint, destination_ip(data.context)
        )
        # "block" is normally refused in next_layer before this hook; should a ClientHello get
        # here undecided, it is intercepted (its requests judged), never passed unread.
        if decision in ("intercept", "block"):
            if sni and sni != normalize_host(sni):
                # `host.` and `HOST` are the same name; mitmproxy would put the raw one in the
                # upstream handshake, where a trailing dot raises and the client hangs.
                data.context.client.sni = normalize_host(sni)
            self.ref.get().count("intercepted")
            metrics.connection_intercepted()
            return
        data.ignore_connection = True
        self._passed(data.context, sni, decision)

    def _remember(self, context: Context, fingerprint: str) -> None:
        """The client's JA4, for a refused interception's pin (tls_failed_client); bounded."""
        self.prints[context.client.id] = fingerprint
        while len(self.prints) > MAX_TRACKED:
            self.prints.popitem(last=False)

    def _passed(self, context: Context, sni: str | None, decision: str) -> None:
        self.ref.get().count("passed_through")
        metrics.connection_passed_through(self.why_not_intercepted(sni, client_ip(context)))
        if decision == "pass_log" and sni:
            self._record(context, normalize_host(sni), "not inspectable: passed through", "allow")

    def _pass_watched(
        self,
        nextlayer: layer.NextLayer,
        data: bytes,
        fingerprint: str,
        decision: str,
        sni: str | None,
    ) -> None:
        """Pass a connection through unread, watched until the server's first message: a
        HelloRetryRequest lets the client name another server (sniffer.tlsretry)."""
        context = nextlayer.context
        try:
            whole = complete_client_hello(data)
        except Malformed as error:
            # mitmproxy read a hello the watch cannot: passed on, it would go unwatched, and a
            # server may read it as the watch cannot (a34: a hello split around another record,
            # two hellos in one record). No ordinary client sends one.
            self.ref.get().count("refused_sni_mismatch")
            metrics.connection_refused("sni_mismatch")
            why = f"refused: a ClientHello that cannot be read whole ({error})"
            self._record(context, normalize_host(sni or ""), why, "block")
            nextlayer.layer = RefuseLayer(context)
            return
        if whole is None:
            nextlayer.layer = None  # more of the hello is on its way
            return
        hello, end = whole
        self._remember(context, fingerprint)
        self._passed(context, hello.sni, decision)

        def refused(verdict: Verdict) -> None:
            why = "tls_resumption" if verdict.alert else "sni_mismatch"
            if verdict.renegotiated:
                why = "tls_renegotiation"
            self.ref.get().count(f"refused_{why}")
            metrics.connection_refused(why)
            self._record(
                context, normalize_host(hello.sni or ""), f"refused: {verdict.reason}", "block"
            )

        server = context.server.address[0] if context.server.address else ""
        device = context.client.peername[0] if context.client.peername else ""
        resume = ResumeCheck(hello, server, self.sessions, device)
        watch = RetryWatch(hello.sni, resume)
        nextlayer.layer = WatchedPassThrough(context, watch, end, refused)

    def tls_established_client(self, data: tls.TlsData) -> None:
        self.prints.pop(data.context.client.id, None)

    def tls_failed_client(self, data: tls.TlsData) -> None:
        """A client refused our certificate. For an `inspection: full` app nothing changes: the
        connection failed, and the next one is intercepted again. For a `pinned_native` app,
        after N refusals by one client (JA4) of one device, that client gets the app's
        `when_not_inspectable` action for the host until the entry expires."""
        runtime = self.ref.current
        sni = data.conn.sni
        fingerprint = self.prints.pop(data.context.client.id, "")
        if runtime is None or not sni:
            return
        runtime.count("tls_failed_client")
        host = normalize_host(sni)
        app = runtime.catalog.app_for_host(host)
        limit = ctx.options.schoolgate_pinned_after
        if app is None or app.inspection != "pinned_native" or limit == 0:
            return
        key = (client_ip(data.context) or "", host, fingerprint)
        count = self.failures.pop(key, 0) + 1
        self.failures[key] = count
        while len(self.failures) > MAX_TRACKED:
            self.failures.popitem(last=False)
        if count < limit or self.pinned_action(key) is not None:
            return
        del self.failures[key]
        action = "block" if app.when_not_inspectable == "block_by_sni" else "pass"
        self.pinned[key] = (action, self.clock() + ctx.options.schoolgate_pinned_ttl)
        while len(self.pinned) > MAX_TRACKED:
            self.pinned.popitem(last=False)
        log.warning(
            "%s (TLS client %s) refused interception of %s %d times (certificate pinning): now %s",
            key[0],
            fingerprint or "unknown",
            host,
            count,
            "refused by SNI" if action == "block" else "passed through uninspected",
        )
        self._record(
            data.context,
            host,
            f"certificate pinned by TLS client {fingerprint or 'unknown'}: {action} after "
            f"{count} failures",
            "block" if action == "block" else "allow",
        )
