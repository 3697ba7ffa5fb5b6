"""The 403 a pupil's device sees when the school network stops an upload or a download."""

from __future__ import annotations

import html
import json

from mitmproxy import http

from schoolgate.config import ProxyConfig

# Reasons shown to the pupil are generic on purpose: the precise reason (bank name, scores) is for
# the audit log and the safeguarding lead, and naming it would teach how to evade it.
_WHAT = {
    "upload": "This upload was blocked by the school network.",
    "download": "This download was blocked by the school network.",
    "message": "This message was blocked by the school network.",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Blocked by the school network</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;
color:#222}}h1{{font-size:1.4em}}small{{color:#666}}</style></head>
<body><h1>{what}</h1>
<p>{school} filters photos and videos shared from its Wi-Fi to keep pupils safe.</p>
<p>{contact}</p>
<p><small>Reference: {ref}</small></p></body></html>
"""


def wants_html(accept: str) -> bool:
    """Browsers ask for text/html first; apps and API clients get JSON."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            return True
        if media in ("application/json", "*/*"):
            return False
    return False


def block_response(
    proxy: ProxyConfig, direction: str, reference: str, accept: str = ""
) -> http.Response:
    """A 403 saying the school network blocked it; never echoes any of the content."""
    what = _WHAT.get(direction, _WHAT["upload"])
    headers = {"Cache-Control": "no-store", "X-Schoolgate": "blocked"}
    if wants_html(accept):
        body = _PAGE.format(
            what=html.escape(what),
            school=html.escape(proxy.school_name),
            contact=html.escape(proxy.block_contact),
            ref=html.escape(reference),
        )
        headers["Content-Type"] = "text/html; charset=utf-8"
        return http.Response.make(403, body.encode("utf-8"), headers)
    payload = {
        "error": "blocked_by_school_network",
        "message": what,
        "school": proxy.school_name,
        "contact": proxy.block_contact,
        "reference": reference,
    }
    headers["Content-Type"] = "application/json"
    return http.Response.make(403, json.dumps(payload).encode("utf-8"), headers)
