"""Uploads: hold every request body sent to an intercepted host, judge each media item in it,
block before forwarding. Catalogued routes add only what a request alone cannot say: which
upload protocol reassembles chunks across requests."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from mitmproxy import http

from schoolgate.addons import heldbody, trailers
from schoolgate.addons.flows import (
    READ_RESPONSE,
    declared_size,
    enforce,
    extract_limits,
    flow_context,
    hook_failed,
    intercepted_app,
    judge_items,
)
from schoolgate.addons.heldbudget import HeldBudget
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.endpoints.bodyscan import ExtractedItem, extract_items
from schoolgate.endpoints.carving import restored_start
from schoolgate.endpoints.catalog import ANY_REQUEST, App, UploadRoute
from schoolgate.endpoints.encoding import decode_content_encoding
from schoolgate.endpoints.extract import ExtractionError
from schoolgate.endpoints.first_parts import FirstPart, held_whole, inside
from schoolgate.endpoints.looks import worth_a_look
from schoolgate.endpoints.protocols import parse_chunks
from schoolgate.endpoints.reassembly import LOCATION, Chunk, ChunkError, SessionStatus
from schoolgate.media.cutshort import shows_part, shows_rows
from schoolgate.pipeline.verdict import InspectionContext, Verdict

log = logging.getLogger("schoolgate.proxy")

META = "schoolgate_upload"
HELD_BYTES = "schoolgate_held_bytes"
OVER_BUDGET = "schoolgate_over_budget"
PENDING_CHUNK = "schoolgate_pending_chunk"
SESSION_STATUS = "schoolgate_session_status"
SMALL_BODY_BYTES = 64 * 1024


@dataclass
class HeldAccount:
    """The held bytes one flow has taken from the proxy-wide budget, given back when done."""

    budget: HeldBudget
    device: str
    size: int = 0  # taken in all
    shared: int = 0  # of which taken from the total only (a small body's first bytes)


@dataclass(frozen=True)
class HeldUpload:
    """Why a request is held: the app and route it matched."""

    app: App
    route: UploadRoute


# Bodies up to this size are scanned on the event loop (a small API call costs microseconds);
# larger ones in a thread, so a hostile body never stalls every other pupil's traffic.
INLINE_SCAN_BYTES = 64 * 1024


class UploadInspector:
    """Holds every request body to an intercepted host up to the size cap; streams the rest."""

    # How long a chunk that lands past what is held from its upload's start waits for the
    # bytes before it (sent side by side) before it is refused as begun elsewhere (a70 F2, F5).
    start_wait_s: float = 5.0

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    def load(self, loader: object) -> None:
        heldbody.install()
        trailers.install()

    def route_for(self, runtime: Runtime, flow: http.HTTPFlow) -> HeldUpload | None:
        request = flow.request
        host = request.pretty_host
        found = runtime.catalog.upload_route(host, request.method, request.path)
        if found is None:
            found = runtime.learnt.upload_route(host, request.method, request.path)
        if found is not None:
            return HeldUpload(*found)
        # Any other method or path: an app's server may take media on routes we never listed.
        app = intercepted_app(runtime, flow)
        return HeldUpload(app, ANY_REQUEST) if app is not None else None

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
        heldbody.hold(flow, heldbody.HeldCap(cap, self.over_cap, self.grow))
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

    def grow(self, flow: http.HTTPFlow, size: int) -> bool:
        """Take `size` more held bytes from the proxy-wide budget for this flow's device."""
        runtime = self.ref.current
        if runtime is None:
            return True
        account = flow.metadata.get(HELD_BYTES)
        if not isinstance(account, HeldAccount):
            ctx = flow_context(runtime, flow, None, None)
            account = HeldAccount(runtime.held, ctx.mac or ctx.client_ip or "")
            flow.metadata[HELD_BYTES] = account
        # A body's first bytes come from the total only: a pupil whose upload fills their
        # share can still send chat messages and API calls (they are all held too).
        small = min(size, max(0, SMALL_BODY_BYTES - account.size))
        if small and not account.budget.take(None, small):
            flow.metadata[OVER_BUDGET] = True
            return False
        if size > small and not account.budget.take(account.device, size - small):
            account.budget.give_back(None, small)
            flow.metadata[OVER_BUDGET] = True
            return False
        account.size += size
        account.shared += small
        return True

    def release(self, flow: http.HTTPFlow) -> None:
        """Give this flow's held bytes back to the budget (judged, refused or streamed on)."""
        account = flow.metadata.pop(HELD_BYTES, None)
        if isinstance(account, HeldAccount):
            account.budget.give_back(None, account.shared)
            account.budget.give_back(account.device, account.size - account.shared)

    def error(self, flow: http.HTTPFlow) -> None:
        """The flow failed (the client went away mid-body): its held bytes are free again."""
        self.release(flow)

    def over_cap(self, flow: http.HTTPFlow, received: int) -> None:
        """A held body outgrew the cap, or the memory budget, while arriving: the oversize or
        the overload fail policy decides."""
        runtime = self.ref.current
        held = flow.metadata.get(META)
        over_budget = flow.metadata.pop(OVER_BUDGET, False)
        if runtime is None or not isinstance(held, HeldUpload):
            self.release(flow)
            return  # nothing to decide with: the body is refused with a plain 413
        if over_budget:
            budget = runtime.held
            detail = (
                f"held bodies are over the memory budget: {budget.held_by(self._device(flow))} "
                f"bytes held for this device (share {budget.per_device}), {budget.held} in all "
                f"(total {budget.total})"
            )
            self.fail(runtime, flow, held, "overload", detail, received)
            return
        cap = runtime.config.proxy.max_held_body_bytes
        detail = f"body of at least {received} bytes is over the {cap} byte cap"
        self.fail(runtime, flow, held, "oversize", detail, received)

    def _device(self, flow: http.HTTPFlow) -> str:
        account = flow.metadata.get(HELD_BYTES)
        return account.device if isinstance(account, HeldAccount) else ""

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
        self.release(flow)
        ctx = replace(flow_context(runtime, flow, held.app.name, held.route.path), size=size)
        verdict = runtime.unavailable(ctx, failure, detail)
        if not enforce(runtime, flow, [verdict], "upload"):
            flow.request.stream = True

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "upload", error)
        finally:
            self.release(flow)

    async def _request(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        held = flow.metadata.get(META)
        if runtime is None or not isinstance(held, HeldUpload) or flow.response is not None:
            return
        verdicts = await self.inspect(runtime, flow, held)
        enforce(runtime, flow, verdicts, "upload")

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._response(flow)
        except Exception:  # the request was judged; a bad reply must not crash the hook
            log.exception("schoolgate: reading an upload session reply failed")

    def _response(self, flow: http.HTTPFlow) -> None:
        """Put a chunk whose session id comes in the reply into that session. A reply with no
        readable id leaves the upload unbound: its later chunks are refused as orphaned."""
        pending = flow.metadata.pop(PENDING_CHUNK, None)
        runtime = self.ref.current
        response = flow.response
        if pending is None or runtime is None or response is None:
            return
        client, app, chunk = pending
        if not 200 <= response.status_code < 300 or len(response.raw_content or b"") > 1 << 20:
            return
        if chunk.session_from_response == LOCATION:  # tus: the upload's URL
            session_id: object = urlsplit(response.headers.get("location", "")).path
        else:
            try:
                document = json.loads(response.get_content(strict=False) or b"")
            except (ValueError, RecursionError):
                return
            field = chunk.session_from_response
            session_id = document.get(field) if isinstance(document, dict) else None
        if not isinstance(session_id, str) or not session_id:
            return
        state = runtime.sessions.add(client, app, replace(chunk, session_id=session_id))
        if state.failed:
            runtime.sessions.fail(client, app, session_id, state.status)

    async def start_seen(
        self, runtime: Runtime, held: HeldUpload, chunks: list[Chunk], device: str
    ) -> bool:
        """Whether the bytes before each of this request's chunks are here, or came within
        `start_wait_s` (chunks sent side by side); where not, the upload is refused as begun
        elsewhere and its session tombstoned (`UploadSessions.waits_for_start`)."""
        client, app = device, held.app.name
        deadline = asyncio.get_running_loop().time() + self.start_wait_s
        for chunk in chunks:
            while runtime.sessions.waits_for_start(client, app, chunk):
                if asyncio.get_running_loop().time() >= deadline:
                    runtime.sessions.fail(client, app, chunk.session_id,
                                          SessionStatus.UNSEEN_PARTS)  # fmt: skip
                    return False
                await asyncio.sleep(0.05)
        return True

    def reassemble(
        self,
        runtime: Runtime,
        flow: http.HTTPFlow,
        held: HeldUpload,
        chunks: list[Chunk],
        device: str,
    ) -> tuple[list[bytes], list[tuple[str, FirstPart]]] | str:
        """Add this request's chunks: every media they complete and the unfinished uploads'
        first parts worth looking at for a banked picture (`UploadSessions.partial`), or a
        failure name."""
        client, app = device, held.app.name
        complete: list[bytes] = []
        partial: list[tuple[str, FirstPart]] = []  # (session id, its first part)
        for chunk in chunks:
            if chunk.joins:
                joined = runtime.sessions.parts(client, app, chunk.joins)
                if joined is None:  # a part sent from elsewhere (its first bytes: a49 F6)
                    flow.metadata[SESSION_STATUS] = "joins parts not seen whole here"
                    return _session_failure(SessionStatus.UNSEEN_PARTS)
                complete.append(restored_start(joined) or joined)
                continue
            if chunk.session_from_response is not None:
                # The id is in the reply (Dropbox upload_session/start): the chunk joins its
                # session when the reply arrives (`response`), so two uploads never share a key.
                flow.metadata[PENDING_CHUNK] = (client, app, chunk)
                flow.metadata[READ_RESPONSE] = True
                # The service stores what the first request carries as it arrives (a tus
                # creation-with-upload, a Dropbox upload_session/start), and the rest may never
                # come this way (a49 F7, F8): a whole picture is judged now, a first part looked at.
                whole_file = chunk.final and not chunk.part  # a part is joined later
                if chunk.data and (whole_file or held_whole(chunk.data)):
                    complete.append(restored_start(chunk.data) or chunk.data)
                elif chunk.data and (not shows_part(chunk.data) or worth_a_look(
                    len(chunk.data), chunk.total, still=shows_rows(chunk.data)
                )):  # fmt: skip
                    partial.append(("", FirstPart(chunk.data, chunk.total)))  # no id before reply
                continue
            state = runtime.sessions.add(client, app, chunk)
            if state.failed:
                flow.metadata[SESSION_STATUS] = state.status.value
                # Tombstoned: the next chunks of this upload fail too (no poison-and-restart).
                runtime.sessions.fail(client, app, chunk.session_id, state.status)
                return _session_failure(state.status)
            if state.complete and state.part:  # kept for its join; the service holds it
                assembled = runtime.sessions.assemble(client, app, chunk.session_id)
                if held_whole(assembled):
                    complete.append(restored_start(assembled) or assembled)
                else:
                    partial.append(("", FirstPart(assembled, None)))
            elif state.complete:
                assembled = runtime.sessions.assemble(client, app, chunk.session_id)
                complete.append(restored_start(assembled) or assembled)
                runtime.sessions.discard(client, app, chunk.session_id)
            elif (early := runtime.sessions.interim(client, app, chunk.session_id,
                                                    held_whole)) is not None:  # fmt: skip
                complete.append(restored_start(early) or early)  # the service holds it whole
            elif part := runtime.sessions.partial(client, app, chunk.session_id):
                since = runtime.sessions.looked_before(client, app, chunk.session_id)
                partial.append((chunk.session_id, FirstPart(*part, since)))
        return complete, partial

    async def inspect(
        self, runtime: Runtime, flow: http.HTTPFlow, held: HeldUpload
    ) -> list[Verdict]:
        """Every media item in the body, judged concurrently in the worker pool."""
        request = flow.request
        body = request.raw_content or b""
        if not body and held.route.protocol is None:
            return []  # nothing to judge (a protocol's empty FINALIZE completes an upload)
        cap = runtime.config.proxy.max_held_body_bytes
        ctx = flow_context(runtime, flow, held.app.name, held.route.path)
        if len(body) > cap:  # chunked bodies carry no Content-Length to check up front
            return [
                runtime.unavailable(_sized(ctx, len(body)), "oversize", f"over the {cap} byte cap")
            ]
        try:
            if len(body) <= INLINE_SCAN_BYTES:
                body, items, step = self.scan(runtime, flow, held, body)
            else:
                body, items, step = await asyncio.to_thread(self.scan, runtime, flow, held, body)
            if step:
                # Sessions are per device (its MAC from the DHCP leases, else its address), so
                # a phone that changes address mid-upload keeps its session.
                device = ctx.mac or ctx.client_ip or ""
                chunks = _chunks(held, flow, body)  # ChunkError: refused below, with the reason
                if not await self.start_seen(runtime, held, chunks, device):
                    detail = "upload session: the bytes before this chunk were not sent here"
                    return [runtime.unavailable(_sized(ctx, len(body)), "refused", detail)]
                media = self.reassemble(runtime, flow, held, chunks, device)
                if isinstance(media, str):
                    detail = f"upload session: {flow.metadata.pop(SESSION_STATUS, media)}"
                    return [runtime.unavailable(_sized(ctx, len(body)), media, detail)]
                # Nothing complete: an earlier chunk, forwarded unless its upload's first part
                # already shows a banked picture; the final one waits for the whole.
                complete, partial = media
                verdicts = []
                limits = extract_limits(runtime)
                for whole in complete:
                    pieces = (inside(whole, limits) if len(whole) <= INLINE_SCAN_BYTES
                              else await asyncio.to_thread(inside, whole, limits))  # fmt: skip
                    # The request's own name and type kept (not_analysed).
                    verdicts += await judge_items(runtime, ctx, pieces, len(whole), True)
                for session_id, part in partial:
                    found = None
                    for piece in await asyncio.to_thread(part.looked_at, limits):
                        found = found or await runtime.judge_partial(piece, _sized(ctx, len(piece)))
                    if found is not None:
                        verdicts.append(found)
                        # Its later chunks are refused too: the service must not be sent
                        # the rest of a banked picture a chunk at a time (a49 F9).
                        runtime.sessions.fail(device, held.app.name, session_id,
                                              SessionStatus.BANKED_PART)  # fmt: skip
                return verdicts
        except (ExtractionError, ChunkError) as exc:
            failure = "oversize" if exc.reason == "oversize" else "refused"
            return [runtime.unavailable(_sized(ctx, len(body)), failure, f"{exc.reason}: {exc}")]
        except Exception as exc:  # hostile input must become a decision, never a crash
            log.exception("extraction failed")
            return [runtime.unavailable(_sized(ctx, len(body)), "error", type(exc).__name__)]
        if not items:
            self.no_media(runtime, flow, held, len(body))
            return []
        runtime.count("upload_items", len(items))
        return await judge_items(runtime, ctx, items, len(body))

    def scan(
        self, runtime: Runtime, flow: http.HTTPFlow, held: HeldUpload, body: bytes
    ) -> tuple[bytes, list[ExtractedItem], bool]:
        """The decoded body, the media in it, and whether it is a step of the route's upload
        protocol. A step's chunk is judged after reassembly, not alone; any other request on a
        protocol route (X's simple upload, a raw upload to a resumable endpoint) is judged as
        it stands. Runs in a thread for large bodies."""
        request = flow.request
        limits = extract_limits(runtime)
        body = decode_content_encoding(body, request.headers.get("content-encoding", ""), limits)
        if held.route.protocol is not None and self.is_protocol_step(held, flow, body):
            return body, [], True
        return body, extract_items(body, request.headers.get("content-type", ""), limits), False

    def is_protocol_step(self, held: HeldUpload, flow: http.HTTPFlow, body: bytes) -> bool:
        """Whether this request carries a chunk of the route's upload protocol."""
        try:
            return bool(_chunks(held, flow, body))
        except ChunkError:
            return True  # claims the protocol: reassembly refuses it with the reason

    def no_media(self, runtime: Runtime, flow: http.HTTPFlow, held: HeldUpload, size: int) -> None:
        """A body with no media in it: counted; a large one on a catalogued upload route is also
        audited (64 KiB or more of something we do not recognise is worth a line for IT; chat
        messages and API calls are far too many to audit one by one)."""
        runtime.count("bodies_without_media")
        if held.route is ANY_REQUEST or size < INLINE_SCAN_BYTES:
            return
        ctx = flow_context(runtime, flow, held.app.name, held.route.path)
        runtime.note(
            "no_media",
            ctx,
            size=size,
            content_type=flow.request.headers.get("content-type", "")[:100],
        )


def _session_failure(status: SessionStatus) -> str:
    if status is SessionStatus.CONFLICTING_CHUNKS:
        return "conflicting_chunks"
    if status in (SessionStatus.UNSEEN_PARTS, SessionStatus.BANKED_PART):
        return "refused"
    if status is SessionStatus.STORE_FULL:
        return "overload"
    return "oversize"


def _sized(ctx: InspectionContext, size: int) -> InspectionContext:
    return replace(ctx, size=size)


def _chunks(held: HeldUpload, flow: http.HTTPFlow, body: bytes) -> list[Chunk]:
    """The chunks of the route's upload protocol this request carries (ChunkError: it claims
    the protocol and cannot be read)."""
    request = flow.request
    assert held.route.protocol is not None
    pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.fields]
    return parse_chunks(held.route.protocol, request.method, request.path, pairs, body)
