"""The onboarding page: how a pupil's own phone gets the school's certificate (issue 17).

Catalogued sharing apps are intercepted for every device, so on a device without the school's
CA they fail with a bare TLS error. Typing the gateway's address into the browser
(http://<gateway>/, plain HTTP; the gateway's ruleset sends port 80 of its own addresses here)
shows a page that explains why and offers the CA certificate in the forms phones install
(.crt for Android and Windows, .mobileconfig for iPhone and iPad, .pem). Only the certificate is
ever served, never its key; only on the gateway's own address; only in transparent mode.
"""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path

from schoolgate.addons.runtime import RuntimeRef
from schoolgate.config import Config
from schoolgate.gateway.ca import export_ca, load_ca

log = logging.getLogger("schoolgate.proxy")

_DOWNLOADS = {
    "/schoolgate-ca.crt": ("der", "application/x-x509-ca-cert"),
    "/schoolgate-ca.pem": ("pem", "application/x-pem-file"),
    "/schoolgate-ca.mobileconfig": ("mobileconfig", "application/x-apple-aspen-config"),
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{school}: set up this device</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em">
<h1>{school} Wi-Fi</h1>
<p>This network checks pictures and videos shared through some apps, to keep pupils safe. To use
those apps here, this device needs the school's network certificate. Without it they show a
security error on this network; everything else works as usual.</p>
<h2>Install the certificate</h2>
<ul>
<li><b>iPhone or iPad</b>: <a href="/schoolgate-ca.mobileconfig">download the profile</a>, then
Settings &gt; General &gt; VPN &amp; Device Management to install it, and Settings &gt; General &gt;
About &gt; Certificate Trust Settings to turn on full trust for it.</li>
<li><b>Android</b>: <a href="/schoolgate-ca.crt">download the certificate</a>, then Settings &gt;
Security &gt; Encryption &amp; credentials &gt; Install a certificate &gt; CA certificate.</li>
<li><b>Windows, Mac, Chromebook</b>: <a href="/schoolgate-ca.crt">.crt</a> or
<a href="/schoolgate-ca.pem">.pem</a>, installed as a trusted root by your school's IT.</li>
</ul>
<p>Certificate fingerprint (SHA-256), to check with IT: <code>{fingerprint}</code></p>
<p>{contact}</p>
</body></html>
"""


def onboarding_response(config: Config, path: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for one GET on the onboarding server."""
    ca = load_ca(Path(config.data_dir) / "ca")
    text = {"Content-Type": "text/plain; charset=utf-8"}
    if ca is None:
        return 503, text, b"The school's certificate is not made yet.\n"
    organization = config.proxy.school_name
    if path in _DOWNLOADS:
        fmt, content_type = _DOWNLOADS[path]
        headers = {
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{path[1:]}"',
        }
        return 200, headers, export_ca(ca, fmt, organization)  # type: ignore[arg-type]
    if path in ("/", "/index.html"):
        page = _PAGE.format(
            school=html.escape(organization),
            fingerprint=html.escape(ca.fingerprint()),
            contact=html.escape(config.proxy.block_contact),
        )
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()
    return 404, text, b"Not found. See / for this network's setup.\n"


class OnboardingServer:
    """A small plain-HTTP server in the proxy process, for http://<gateway>/ (the gateway's
    ruleset redirects port 80 of its own addresses here: transparent mode only)."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref
        self.server: asyncio.Server | None = None

    async def running(self) -> None:
        runtime = self.ref.current
        if runtime is None or self.server is not None:
            return
        proxy = runtime.config.proxy
        if proxy.mode != "transparent" or not proxy.onboarding:
            return
        try:
            self.server = await asyncio.start_server(
                self.handle, proxy.listen_host, proxy.onboarding_port
            )
        except OSError as error:
            log.error("schoolgate: the onboarding page cannot listen: %s", error)

    def done(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0].decode("ascii", "replace").partition("?")[0]
            runtime = self.ref.current
            if runtime is None:
                status, headers, body = 503, {}, b"starting\n"
            elif method not in (b"GET", b"HEAD"):
                status, headers, body = 405, {"Allow": "GET, HEAD"}, b""
            else:
                status, headers, body = onboarding_response(runtime.config, target)
                runtime.count("onboarding_served")
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            lines += [f"Content-Length: {len(body)}", "Cache-Control: no-store",
                      "Connection: close", "", ""]  # fmt: skip
            writer.write("\r\n".join(lines).encode("latin-1"))
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sends no request, or too much, is simply dropped
        finally:
            writer.close()


_READ_TIMEOUT_S = 10
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
