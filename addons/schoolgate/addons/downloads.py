"""Downloads: media from catalogued sharing CDNs is judged before delivery; learn rules."""

from __future__ import annotations

import logging
import re

from mitmproxy import http

from schoolgate.addons import heldbody
from schoolgate.addons.blockpage import block_response
from schoolgate.addons.flows import (
    READ_RESPONSE,
    cdn_app,
    declared_size,
    extract_limits,
    flow_context,
    hook_failed,
)
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.endpoints.catalog import MAX_LEARN_BODY_BYTES
from schoolgate.endpoints.encoding import decode_content_encoding
from schoolgate.endpoints.extract import ExtractionError
from schoolgate.pipeline.verdict import Verdict

log = logging.getLogger("schoolgate.proxy")

HELD = "schoolgate_download"
LEARN = "schoolgate_learn"
RANGE = "schoolgate_range"

_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class DownloadInspector:
    """Holds CDN media responses up to the cap; a blocked one is replaced by a placeholder 403."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    def load(self, loader: object) -> None:
        heldbody.install()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._requestheaders(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "download", error)

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        """Ranges of a CDN object are fetched whole: judged in pieces, each piece would be a
        truncated file (allowed by the download fail policy), and two ranges would deliver a
        banked picture in halves. The object is judged whole and the range the client asked
        for is cut from it afterwards (`slice_range`)."""
        runtime = self.ref.current
        request = flow.request
        if runtime is None or cdn_app(runtime, flow) is None:
            return
        wanted = request.headers.get("range")
        if wanted is None:
            return
        del request.headers["range"]
        request.headers.pop("if-range", None)
        flow.metadata[RANGE] = wanted
        runtime.count("ranges_fetched_whole")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "download", error)

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        response = flow.response
        if runtime is None or response is None:
            return
        host = flow.request.pretty_host
        size = declared_size(response.headers)
        rules = runtime.catalog.learn_rules(host, flow.request.method, flow.request.path)
        if rules and (size is None or size <= MAX_LEARN_BODY_BYTES):
            flow.metadata[LEARN] = True
            response.stream = False
            return
        if flow.metadata.get(READ_RESPONSE) and (size is None or size <= MAX_LEARN_BODY_BYTES):
            response.stream = False  # an upload session's id is in this reply
            return
        app = cdn_app(runtime, flow)
        if app is None or not 200 <= response.status_code < 300 or flow.request.method == "HEAD":
            response.stream = True
            return
        cap = runtime.config.proxy.max_held_body_bytes
        if size is not None and size > cap:
            ctx = flow_context(runtime, flow, app.name, "download", direction="download")
            verdict = runtime.unavailable(
                ctx, "oversize", f"download of {size} bytes is over the {cap} byte cap"
            )
            if verdict.blocked:
                flow.kill()  # type: ignore[no-untyped-call]  # the body is on its way: cutting the connection is the only refusal
            else:
                response.stream = True
            return
        # Chunked and HTTP/2 bodies may declare no length: the cap also applies as bytes arrive.
        heldbody.hold_response(flow, heldbody.HeldCap(cap, self.over_cap))
        flow.metadata[HELD] = app.name

    def over_cap(self, flow: http.HTTPFlow, received: int) -> None:
        """A held download outgrew the cap while arriving: the oversize fail policy decides
        between the block page (the upstream is cut off) and streaming the rest through."""
        runtime = self.ref.current
        app = flow.metadata.pop(HELD, None)
        if runtime is None or not isinstance(app, str) or flow.response is None:
            return  # nothing to decide with: the download is aborted
        cap = runtime.config.proxy.max_held_body_bytes
        ctx = flow_context(runtime, flow, app, "download", direction="download")
        detail = f"download of at least {received} bytes is over the {cap} byte cap"
        verdict = runtime.unavailable(ctx, "oversize", detail)
        if verdict.blocked:
            flow.response = block_response(
                runtime.config.proxy, "download", verdict.id, flow.request.headers.get("accept", "")
            )
        else:
            flow.response.stream = True

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            await self._response(flow)
        except Exception as error:  # our own bug must not let the flow through unjudged
            hook_failed(self.ref, flow, "download", error)

    async def _response(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        response = flow.response
        if runtime is None or response is None:
            return
        if flow.metadata.get(LEARN):
            self.learn(runtime, flow)
        app = flow.metadata.get(HELD)
        if not isinstance(app, str):
            return
        verdict = await self.inspect(runtime, flow, app)
        if verdict.blocked:
            flow.response = block_response(
                runtime.config.proxy, "download", verdict.id, flow.request.headers.get("accept", "")
            )
        else:
            slice_range(flow)

    async def inspect(self, runtime: Runtime, flow: http.HTTPFlow, app: str) -> Verdict:
        assert flow.response is not None
        ctx = flow_context(runtime, flow, app, "download", direction="download")
        body = flow.response.raw_content or b""
        cap = runtime.config.proxy.max_held_body_bytes
        if len(body) > cap:
            return runtime.unavailable(ctx, "oversize", f"over the {cap} byte cap")
        try:
            body = decode_content_encoding(
                body, flow.response.headers.get("content-encoding", ""), extract_limits(runtime)
            )
        except ExtractionError as exc:
            return runtime.unavailable(ctx, "refused", str(exc))
        return await runtime.judge(body, ctx)

    def learn(self, runtime: Runtime, flow: http.HTTPFlow) -> None:
        """Remember upload hosts an app's reply hands out, so their uploads are held too."""
        assert flow.response is not None
        request = flow.request
        body = flow.response.get_content(strict=False) or b""
        for app, rule in runtime.catalog.learn_rules(
            request.pretty_host, request.method, request.path
        ):
            headers = list(flow.response.headers.fields)
            pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
            for host in rule.learn(pairs, body):
                runtime.learnt.add(host, app, rule)
                runtime.count("learnt_hosts")
                log.info("learnt upload host %s for %s", host, app.name)


def slice_range(flow: http.HTTPFlow) -> None:
    """Answer a single-range request, fetched whole and judged, with the 206 it asked for.

    Several ranges, or one that cannot be satisfied, get the whole object (a 200): a server may
    always ignore Range (RFC 9110, 14.2), and every client handles it."""
    wanted = flow.metadata.pop(RANGE, None)
    response = flow.response
    if not isinstance(wanted, str) or response is None or response.status_code != 200:
        return
    match = _SINGLE_RANGE.match(wanted)
    if match is None or response.headers.get("content-encoding", "identity") != "identity":
        return
    body = response.raw_content or b""
    size = len(body)
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
    elif last_text:  # the last N bytes
        first, last = max(size - int(last_text), 0), size - 1
    else:
        return
    if first > last or first >= size:
        return
    response.status_code = 206
    response.reason = "Partial Content"
    response.headers["content-range"] = f"bytes {first}-{last}/{size}"
    response.content = body[first : last + 1]  # sets Content-Length too
