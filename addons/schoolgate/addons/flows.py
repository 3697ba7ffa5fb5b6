"""What the uploads, downloads and WebSocket addons share: who sent a flow, the size it declares,
the body caps, and the block reply. Kept here so that those addons never import each other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from mitmproxy import http

from schoolgate.addons.blockpage import block_response
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.endpoints.bodyscan import ExtractedItem, body_limits
from schoolgate.endpoints.catalog import App
from schoolgate.endpoints.extract import ExtractLimits
from schoolgate.pipeline.verdict import InspectionContext, Verdict


def flow_context(
    runtime: Runtime,
    flow: http.HTTPFlow,
    app: str | None,
    route: str | None,
    direction: str = "upload",
) -> InspectionContext:
    """Who sent this flow and where to: the audit record's identity fields."""
    peer = flow.client_conn.peername
    ip = str(peer[0]) if peer else None
    return runtime.context(
        ip, app=app, host=flow.request.pretty_host, route=route, direction=direction
    )


def intercepted_app(runtime: Runtime, flow: http.HTTPFlow) -> App | None:
    """The app whose traffic this flow is: by its Host, else by the name the connection was
    intercepted for (its SNI), else a learnt upload host. The SNI counts because a Host naming
    some other site on an intercepted connection (fronting) must not make its body unjudged."""
    catalog = runtime.catalog
    for name in (flow.request.pretty_host, flow.client_conn.sni):
        if name:
            app = catalog.app_for_host(name)
            if app is None:
                learnt = runtime.learnt.get(name)
                app = learnt.app if learnt is not None else None
            if app is not None:
                return app
    return None


def cdn_app(runtime: Runtime, flow: http.HTTPFlow) -> App | None:
    """The app whose download CDN this flow is from, by its Host or, on a connection
    intercepted for a CDN's name, by that name (SNI)."""
    for name in (flow.request.pretty_host, flow.client_conn.sni):
        app = runtime.catalog.download_app(name) if name else None
        if app is not None:
            return app
    return None


def declared_size(headers: http.Headers) -> int | None:
    """Content-Length as a number; None when absent or malformed (chunked bodies)."""
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        return None
    return size if size >= 0 else None


def enforce(runtime: Runtime, flow: http.HTTPFlow, verdicts: list[Verdict], direction: str) -> bool:
    """Answer with the block page when any verdict blocks; True when blocked."""
    blocking = [v for v in verdicts if v.blocked]
    if not blocking:
        return False
    flow.response = block_response(
        runtime.config.proxy,
        direction,
        blocking[0].id,
        flow.request.headers.get("accept", ""),
    )
    flow.metadata["schoolgate_blocked"] = [v.id for v in blocking]
    return True


def extract_limits(runtime: Runtime) -> ExtractLimits:
    """Body caps: what the proxy holds, decoded to at most the same again."""
    return body_limits(runtime.config.proxy.max_held_body_bytes)


async def judge_items(
    runtime: Runtime,
    ctx: InspectionContext,
    items: Sequence[ExtractedItem],
    body_size: int,
    request_names: bool = False,
) -> list[Verdict]:
    """Judge a body's items, at most as many at once as the pool has workers: a deck of 200
    pictures must queue behind itself, not fill the pool's queue and turn into `overload`
    for its own later pictures and for other pupils. `request_names`: each item is judged under
    the request's own file name and type (a reassembled upload's), not its part's."""
    gate = asyncio.Semaphore(max(1, runtime.pool.workers))

    async def judge(item: ExtractedItem) -> Verdict:
        named = (
            ctx
            if request_names
            else replace(ctx, filename=item.filename, declared_type=item.declared_type)
        )
        where = replace(named, size=len(item.data), locator=item.locator, body_size=body_size,
                        carved=item.carved or None)  # fmt: skip
        async with gate:
            return await runtime.judge(item.data, where)

    return list(await asyncio.gather(*(judge(item) for item in items)))


log = logging.getLogger("schoolgate.proxy")

# Set by an addon that needs a flow's (small) reply body: the downloads addon, which otherwise
# streams replies from hosts that are not CDNs, keeps it.
READ_RESPONSE = "schoolgate_read_response"


def hook_failed(ref: RuntimeRef, flow: http.HTTPFlow, direction: str, error: Exception) -> None:
    """One of our own hooks raised. mitmproxy would log it and carry on, forwarding the flow
    unjudged: fail open. Instead the group's `error` fail policy decides (block by default on
    uploads), and the decision is audited like any other. If even that fails, the flow is
    killed: a bug must never let media through uninspected."""
    log.error(
        "schoolgate: %s hook failed for %s%s: %s: %s",
        direction,
        flow.request.pretty_host,
        flow.request.path[:120],
        type(error).__name__,
        error,
        exc_info=error,
    )
    try:
        runtime = ref.get()
        app = runtime.catalog.app_for_host(flow.request.pretty_host)
        ctx = flow_context(
            runtime, flow, app.name if app else None, "hook error", direction=direction
        )
        detail = f"{type(error).__name__}: {error}"[:300]
        verdict = runtime.unavailable(ctx, "error", detail)
        if direction == "message":
            if verdict.blocked and flow.websocket is not None and flow.websocket.messages:
                flow.websocket.messages[-1].drop()  # type: ignore[no-untyped-call]
            return
        if enforce(runtime, flow, [verdict], direction):
            return
        # Allowed by policy: let it through as it is, without holding what was not set up.
        if direction == "upload":
            flow.request.stream = True
        elif flow.response is not None:
            flow.response.stream = True
    except Exception:
        log.exception("schoolgate: the fail policy itself failed; the connection is cut")
        flow.kill()  # type: ignore[no-untyped-call]
