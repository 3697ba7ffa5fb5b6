"""Sign-in restricted to the school's tenants: settings, headers, and the addon on real flows."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.addons.scope import Scope
from schoolgate.addons.tenants import TenantRestrictions
from schoolgate.config import load_config, parse_config
from schoolgate.endpoints.tenants import TenantsConfig, sign_in_only, tenant_headers
from schoolgate.errors import ConfigError
from tests.support.proxy_harness import REPO_ROOT, make_upstream_pki, write_config

TENANT_ID = "3f6a2b1c-0d4e-4f5a-8b9c-112233445566"
SCHOOL = TenantsConfig(("school.org",), ("school.onmicrosoft.com", "school.org"), TENANT_ID)


def test_headers_for_each_vendor() -> None:
    assert tenant_headers("accounts.google.com", SCHOOL) == {
        "X-GooGApps-Allowed-Domains": "school.org"
    }
    assert tenant_headers("login.microsoftonline.com", SCHOOL) == {
        "Restrict-Access-To-Tenants": "school.onmicrosoft.com,school.org",
        "Restrict-Access-Context": TENANT_ID,
    }
    assert tenant_headers("www.example.org", SCHOOL) == {}
    assert tenant_headers("accounts.google.com", TenantsConfig()) == {}


def test_sign_in_hosts_are_left_alone_unless_restricted() -> None:
    assert sign_in_only("accounts.google.com", TenantsConfig())
    assert sign_in_only("login.microsoftonline.com", TenantsConfig())
    assert not sign_in_only("accounts.google.com", SCHOOL)
    assert not sign_in_only("mail.google.com", TenantsConfig())  # an app host: inspected anyway


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tenants: {google_domains: ['not a domain']}", "tenants.google_domains[0]"),
        ("tenants: {microsoft_tenants: [x.org], microsoft_tenant_id: nope}",
         "tenants.microsoft_tenant_id"),
        ("tenants: {microsoft_tenant_id: " + TENANT_ID + "}", "tenants.microsoft_tenant_id"),
    ],
)  # fmt: skip
def test_settings_errors(text: str, key: str, data_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml")
    assert caught.value.key_path == key


def _runtime(tmp_path: Path, tenants: dict[str, object]) -> Runtime:
    import yaml

    catalog = yaml.safe_load((REPO_ROOT / "config" / "endpoints.yaml").read_text())
    config = write_config(
        tmp_path, 8080, make_upstream_pki(tmp_path / "pki"), catalog_data=catalog,
        extra={"tenants": tenants},
    )  # fmt: skip
    return Runtime.from_config(load_config(config))


def test_sign_in_hosts_pass_through_without_a_restriction(data_dir: Path, tmp_path: Path) -> None:
    unrestricted = _runtime(tmp_path, {})
    try:
        scope = Scope(RuntimeRef(unrestricted))
        assert scope.decide("accounts.google.com", "10.20.0.9") == "pass"
        assert scope.decide("login.microsoftonline.com", "10.20.0.9") == "pass"
        assert scope.decide("mail.google.com", "10.20.0.9") == "intercept"
    finally:
        unrestricted.close()


def test_the_proxy_sets_the_headers_and_overrides_a_pupils_own(
    data_dir: Path, tmp_path: Path
) -> None:
    runtime = _runtime(
        tmp_path,
        {"google_domains": ["school.org"], "microsoft_tenants": ["school.org"],
         "microsoft_tenant_id": TENANT_ID},
    )  # fmt: skip
    try:
        ref = RuntimeRef(runtime)
        addon = TenantRestrictions(ref)
        with taddons.context(addon):
            flows = {}
            for host in ("accounts.google.com", "login.microsoftonline.com", "www.bbc.co.uk"):
                request = tutils.treq(host=host, port=443, scheme=b"https", authority=host.encode(),
                                      headers=http.Headers(((b"X-GooGApps-Allowed-Domains",
                                                             b"gmail.com"),)))  # fmt: skip
                flow = tflow.tflow(req=request)
                addon.requestheaders(flow)
                flows[host] = flow.request.headers
        assert flows["accounts.google.com"]["X-GooGApps-Allowed-Domains"] == "school.org"
        assert flows["login.microsoftonline.com"]["Restrict-Access-Context"] == TENANT_ID
        assert flows["www.bbc.co.uk"]["X-GooGApps-Allowed-Domains"] == "gmail.com"  # untouched
        # The sign-in hosts are intercepted only because the restriction is configured.
        assert Scope(ref).decide("accounts.google.com", "10.20.0.9") == "intercept"
    finally:
        runtime.close()
