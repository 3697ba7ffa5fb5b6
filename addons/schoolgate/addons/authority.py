"""One intercepted connection, one catalogued host: no fronting, no coalescing escape.

A connection is intercepted (or passed, or refused) for the name in its ClientHello. A request
on it whose Host / :authority names a different catalogued host would be judged under a scope
the connection was never decided for: a pinned or refused app's requests could ride on a
connection opened for an inspected one (HTTP/2 coalescing does this by itself on shared edges).
Such a request is answered 421 Misdirected Request before anything is forwarded; browsers and
HTTP/2 clients retry it on a connection of its own (RFC 9110 §15.5.20), which is scoped properly.

Plain HTTP has no SNI, so the same holds for what the request itself names. A request-target in
absolute form names a host that origin servers use in place of `Host` (RFC 9112 §3.2.2): one
that disagrees with `Host` is refused (400), since the filter judges by `Host`. And a request to
an address the gateway's resolver gave out for catalogued hosts only, naming another host or
none, is refused (421) like the TLS name that fronts such an address (adversarial pass a40 F2:
`POST http://content.dropboxapi.com/... ` with `Host: news.example` reached the upload host).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.endpoints.hosts import normalize_host

log = logging.getLogger("schoolgate.proxy")

MISDIRECTED = 421


class AuthorityCheck:
    """Answers 421 to a request naming a catalogued host other than its connection's SNI."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        sni = flow.client_conn.sni
        if runtime is None or flow.response is not None:
            return
        if not sni:
            if not flow.client_conn.tls:
                self._plain(runtime, flow)
            return
        host = normalize_host(flow.request.pretty_host)
        scoped = normalize_host(sni)
        if not host or host == scoped:
            return
        catalog = runtime.catalog
        named = (
            catalog.app_for_host(host) is not None
            or catalog.download_app(host) is not None
            or runtime.learnt.get(host) is not None
        )
        if not named:
            return
        runtime.count("misdirected")
        log.info("request for %s on a connection opened for %s: 421", host, scoped)
        flow.response = http.Response.make(
            MISDIRECTED,
            f"{host} is not served on a connection opened for {scoped}; open a new connection.\n",
            {"content-type": "text/plain; charset=utf-8"},
        )
        flow.metadata["schoolgate_misdirected"] = True

    def _plain(self, runtime: Runtime, flow: http.HTTPFlow) -> None:
        request = flow.request
        header = request.headers.get("host", "")
        names = {normalize_host(name) for name in (header, request.authority) if name.strip()}
        if len(names) > 1:
            runtime.count("misdirected")
            log.info("plain HTTP request naming %s: refused (400)", " and ".join(sorted(names)))
            self._refuse(flow, 400, "The request target and the Host header name different hosts.")
            return
        host = next(iter(names), None)
        address = flow.server_conn.address
        destination = str(address[0]) if address else None
        if not _fronts(runtime, host, destination):
            return
        runtime.count("misdirected")
        log.info("plain HTTP request for %s to %s, an address of catalogued hosts: refused (421)",
                 host or "no host", destination)  # fmt: skip
        ictx = runtime.context(client_ip(flow), app=None, host=host, route="http")
        detail = f"fronting: {host or 'no Host'} to {destination}, an address of catalogued hosts"
        runtime.unavailable(ictx, "not_inspectable", detail, action="block")
        self._refuse(flow, MISDIRECTED, f"{host or 'No host'} is not served at this address.")

    @staticmethod
    def _refuse(flow: http.HTTPFlow, status: int, text: str) -> None:
        flow.response = http.Response.make(
            status, text + "\n", {"content-type": "text/plain; charset=utf-8"}
        )
        flow.metadata["schoolgate_misdirected"] = True


def _fronts(runtime: Runtime, host: str | None, destination: str | None) -> bool:
    """Whether `host` (None: the request names none) goes to an address that the gateway's
    resolver gave out for catalogued hosts and never for it (as Scope.fronted for TLS)."""
    book = runtime.address_book
    if book is None or destination is None or runtime.config.proxy.sni_mismatch == "pass":
        return False
    names = book.names_for(destination)
    if not names or (host is not None and host in names):
        return False
    return any(runtime.catalog.app_for_host(name) is not None for name in names)


def client_ip(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else None
