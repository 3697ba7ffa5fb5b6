"""Uploads: hold catalogued upload bodies, judge each media item, block before forwarding."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from mitmproxy import http

from schoolgate.addons import heldbody
from schoolgate.addons.flows import (
    declared_size,
    enforce,
    extract_limits,
    flow_context,
    hook_failed,
)
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.endpoints.catalog import App, UploadRoute
from schoolgate.endpoints.encoding import decode_content_encoding
from schoolgate.endpoints.extract import ExtractionError, extract_items
from schoolgate.endpoints.protocols import parse_chunk
from schoolgate.endpoints.reassembly import ChunkError, SessionStatus
from schoolgate.pipeline.verdict import InspectionContext, Verdict

log = logging.getLogger("schoolgate.proxy")

META = "schoolgate_upload"


@dataclass(frozen=True)
class HeldUpload:
    """Why a request is held: the app and route it matched."""

    app: App
    route: UploadRoute


class UploadInspector:
    """Holds upload routes up to the size cap; streams everything else straight through."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    def load(self, loader: object) -> None:
        heldbody.install()

    def route_for(self, runtime: Runtime, flow: http.HTTPFlow) -> HeldUpload | None:
        request = flow.request
        host = request.pretty_host
        found = runtime.catalog.upload_route(host, request.method, request.path)
        if found is None:
            found = runtime.learnt.upload_route(host, request.method, request.path)
        return HeldUpload(*found) if found else None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._requestheaders(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "upload", error)

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        if runtime is None or flow.response is not None:
            return
        held = self.route_for(runtime, flow)
        if held is None:
            flow.request.stream = True  # not an upload we inspect: never buffer it
            return
        cap = runtime.config.proxy.max_held_body_bytes
        # Chunked and HTTP/2 bodies may declare no length: the cap also applies as bytes arrive.
        heldbody.hold(flow, heldbody.HeldCap(cap, self.over_cap))
        flow.metadata[META] = held
        coding = flow.request.headers.get("transfer-encoding")
        size = declared_size(flow.request.headers)
        if coding is not None and coding.strip().lower() != "chunked":
            # mitmproxy accepts "gzip, chunked": the bytes under the chunking are not what we
            # would inspect, and no client needs it, so it cannot be judged.
            detail = f"Transfer-Encoding {coding[:40]!r} hides the body from inspection"
            self.fail(runtime, flow, held, "refused", detail, size)
        elif size is not None and size > cap:
            self.fail(
                runtime, flow, held, "oversize", f"body of {size} bytes is over the {cap} byte cap"
            )

    def over_cap(self, flow: http.HTTPFlow, received: int) -> None:
        """A held body outgrew the cap while arriving: the oversize fail policy decides."""
        runtime = self.ref.current
        held = flow.metadata.get(META)
        if runtime is None or not isinstance(held, HeldUpload):
            return  # nothing to decide with: the body is refused with a plain 413
        cap = runtime.config.proxy.max_held_body_bytes
        detail = f"body of at least {received} bytes is over the {cap} byte cap"
        self.fail(runtime, flow, held, "oversize", detail, received)

    def fail(
        self,
        runtime: Runtime,
        flow: http.HTTPFlow,
        held: HeldUpload,
        failure: str,
        detail: str,
        size: int | None = None,
    ) -> None:
        """Cannot be held and judged: the fail policy says block (answer now) or allow (stream)."""
        flow.metadata.pop(META, None)
        ctx = replace(flow_context(runtime, flow, held.app.name, held.route.path), size=size)
        verdict = runtime.unavailable(ctx, failure, detail)
        if not enforce(runtime, flow, [verdict], "upload"):
            flow.request.stream = True

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "upload", error)

    async def _request(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        held = flow.metadata.get(META)
        if runtime is None or not isinstance(held, HeldUpload) or flow.response is not None:
            return
        verdicts = await self.inspect(runtime, flow, held)
        enforce(runtime, flow, verdicts, "upload")

    def reassemble(
        self, runtime: Runtime, flow: http.HTTPFlow, held: HeldUpload, body: bytes
    ) -> bytes | str | None:
        """Add this request's chunk: the whole media once complete, a failure name, or None."""
        request = flow.request
        assert held.route.protocol is not None
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.fields]
        chunk = parse_chunk(held.route.protocol, request.method, request.path, pairs, body)
        if chunk is None:
            return None
        peer = flow.client_conn.peername
        client = str(peer[0]) if peer else ""
        state = runtime.sessions.add(client, held.app.name, chunk)
        if state.failed:
            # Tombstoned: the next chunks of this upload fail too (no poison-and-restart).
            runtime.sessions.fail(client, held.app.name, chunk.session_id, state.status)
            return _session_failure(state.status)
        if not state.complete:
            return None
        media = runtime.sessions.assemble(client, held.app.name, chunk.session_id)
        runtime.sessions.discard(client, held.app.name, chunk.session_id)
        return media

    async def inspect(
        self, runtime: Runtime, flow: http.HTTPFlow, held: HeldUpload
    ) -> list[Verdict]:
        """Every media item in the body, judged concurrently in the worker pool."""
        request = flow.request
        body = request.raw_content or b""
        cap = runtime.config.proxy.max_held_body_bytes
        ctx = flow_context(runtime, flow, held.app.name, held.route.path)
        if len(body) > cap:  # chunked bodies carry no Content-Length to check up front
            return [
                runtime.unavailable(_sized(ctx, len(body)), "oversize", f"over the {cap} byte cap")
            ]
        limits = extract_limits(runtime)
        try:
            body = decode_content_encoding(
                body, request.headers.get("content-encoding", ""), limits
            )
            if held.route.protocol is not None:
                media = self.reassemble(runtime, flow, held, body)
                if isinstance(media, str):
                    return [runtime.unavailable(_sized(ctx, len(body)), media, "upload session")]
                if media is None:
                    return []  # an earlier chunk: forwarded, the final one waits for the whole
                return [await runtime.judge(media, _sized(ctx, len(media)))]
            items = extract_items(
                body,
                request.headers.get("content-type", ""),
                held.route.body,
                limits,
                json_paths=held.route.json_paths,
            )
        except (ExtractionError, ChunkError) as exc:
            failure = "oversize" if exc.reason == "oversize" else "refused"
            return [runtime.unavailable(_sized(ctx, len(body)), failure, f"{exc.reason}: {exc}")]
        except Exception as exc:  # hostile input must become a decision, never a crash
            log.exception("extraction failed")
            return [runtime.unavailable(_sized(ctx, len(body)), "error", type(exc).__name__)]
        runtime.count("upload_items", len(items))
        jobs = [
            runtime.judge(
                item.data,
                replace(
                    ctx,
                    filename=item.filename,
                    declared_type=item.declared_type,
                    size=len(item.data),
                ),
            )
            for item in items
        ]
        return list(await asyncio.gather(*jobs))


def _session_failure(status: SessionStatus) -> str:
    if status is SessionStatus.CONFLICTING_CHUNKS:
        return "conflicting_chunks"
    if status is SessionStatus.STORE_FULL:
        return "overload"
    return "oversize"


def _sized(ctx: InspectionContext, size: int) -> InspectionContext:
    return replace(ctx, size=size)
