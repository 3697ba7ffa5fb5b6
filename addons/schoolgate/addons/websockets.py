"""WebSockets: media a client sends to an intercepted host, in any message, is judged by what
the message holds (a picture, base64 in JSON, a picture inside a binary frame); a message that
holds a blocked item is dropped."""

from __future__ import annotations

import asyncio

from mitmproxy import http

from schoolgate.addons.flows import (
    extract_limits,
    flow_context,
    hook_failed,
    intercepted_app,
    judge_items,
)
from schoolgate.addons.runtime import RuntimeRef
from schoolgate.endpoints.bodyscan import extract_items
from schoolgate.endpoints.extract import ExtractionError
from schoolgate.pipeline.verdict import Verdict

# Messages up to this size are scanned on the event loop; larger ones in a thread.
INLINE_SCAN_BYTES = 64 * 1024


class WebSocketInspector:
    """Media sent in WebSocket messages (chat apps) gets the same judgement as an upload."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        try:
            await self._websocket_message(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "message", error)

    async def _websocket_message(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        if runtime is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        if not message.from_client or message.dropped:
            return
        app = intercepted_app(runtime, flow)
        if app is None:
            return
        ctx = flow_context(runtime, flow, app.name, "websocket")
        content = message.content
        cap = runtime.config.proxy.max_held_body_bytes
        verdicts: list[Verdict]
        if len(content) > cap:
            verdicts = [runtime.unavailable(ctx, "oversize", f"message over the {cap} byte cap")]
        else:
            limits = extract_limits(runtime)
            try:
                if len(content) <= INLINE_SCAN_BYTES:
                    items = extract_items(content, None, limits)
                else:
                    items = await asyncio.to_thread(extract_items, content, None, limits)
            except ExtractionError as exc:
                failure = "oversize" if exc.reason == "oversize" else "refused"
                verdicts = [runtime.unavailable(ctx, failure, f"{exc.reason}: {exc}")]
            else:
                # Chat text, presence and control frames hold no media: no decision to record.
                verdicts = await judge_items(runtime, ctx, items, len(content))
        blocking = [verdict.id for verdict in verdicts if verdict.blocked]
        if blocking:
            message.drop()  # type: ignore[no-untyped-call]
            flow.metadata.setdefault("schoolgate_blocked", []).extend(blocking)
