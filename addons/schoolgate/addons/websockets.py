"""WebSockets: binary media a client sends to a catalogued host is judged; blocked ones dropped."""

from __future__ import annotations

from mitmproxy import http

from schoolgate.addons.flows import flow_context, hook_failed
from schoolgate.addons.runtime import RuntimeRef
from schoolgate.media.sniff import MediaKind, sniff


class WebSocketInspector:
    """Media sent as binary WebSocket frames (chat apps) gets the same judgement as an upload."""

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
        if not message.from_client or message.is_text or message.dropped:
            return
        app = runtime.catalog.app_for_host(flow.request.pretty_host)
        if app is None:
            return  # an intercepted connection to a learnt host that is not an app's own
        if sniff(message.content).kind is MediaKind.UNKNOWN:
            return  # chat text, presence, protobuf control frames: not media, no decision
        ctx = flow_context(runtime, flow, app.name, "websocket")
        cap = runtime.config.proxy.max_held_body_bytes
        if len(message.content) > cap:
            verdict = runtime.unavailable(ctx, "oversize", f"message over the {cap} byte cap")
        else:
            verdict = await runtime.judge(message.content, ctx)
        if verdict.blocked:
            message.drop()  # type: ignore[no-untyped-call]
            flow.metadata.setdefault("schoolgate_blocked", []).append(verdict.id)
