"""One intercepted connection, one catalogued host: no fronting, no coalescing escape.

A connection is intercepted (or passed, or refused) for the name in its ClientHello. A request
on it whose Host / :authority names a different catalogued host would be judged under a scope
the connection was never decided for: a pinned or refused app's requests could ride on a
connection opened for an inspected one (HTTP/2 coalescing does this by itself on shared edges).
Such a request is answered 421 Misdirected Request before anything is forwarded; browsers and
HTTP/2 clients retry it on a connection of its own (RFC 9110 §15.5.20), which is scoped properly.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from schoolgate.addons.runtime import RuntimeRef
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
        if runtime is None or not sni or flow.response is not None:
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
