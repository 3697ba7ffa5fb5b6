"""Sign-in restricted to the school's own Google Workspace and Microsoft 365 tenants: the
headers of schoolgate.endpoints.tenants added to intercepted sign-in and app requests."""

from __future__ import annotations

from mitmproxy import http

from schoolgate.addons.runtime import RuntimeRef
from schoolgate.endpoints.hosts import normalize_host
from schoolgate.endpoints.tenants import tenant_headers


class TenantRestrictions:
    """Adds the vendors' tenant-restriction headers (replacing any the client sent)."""

    def __init__(self, ref: RuntimeRef) -> None:
        self.ref = ref

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        runtime = self.ref.current
        if runtime is None or flow.response is not None:
            return
        headers = tenant_headers(normalize_host(flow.request.pretty_host), runtime.config.tenants)
        for name, value in headers.items():
            flow.request.headers[name] = value  # a pupil's own value never survives
