"""What the uploads, downloads and WebSocket addons share: who sent a flow, the size it declares,
the body caps, and the block reply. Kept here so that those addons never import each other."""

from __future__ import annotations

from mitmproxy import http

from schoolgate.addons.blockpage import block_response
from schoolgate.addons.runtime import Runtime
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
    cap = runtime.config.proxy.max_held_body_bytes
    return ExtractLimits(max_body_bytes=cap, max_decoded_bytes=cap)
