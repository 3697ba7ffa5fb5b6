"""The school's own Google Workspace and Microsoft 365: pupils sign in there, nowhere else.

A personal Google or Microsoft account is a way round the school's rules on its own tenant (and
its sharing settings). Both vendors document headers that a filtering proxy adds to sign-in
traffic so that only the named organisations' accounts can sign in:

- Google: `X-GooGApps-Allowed-Domains: school.org` on requests to Google's sign-in and app hosts
  ("Block access to consumer accounts", Google Workspace Admin Help).
- Microsoft (tenant restrictions v1): `Restrict-Access-To-Tenants: school.onmicrosoft.com,...`
  and `Restrict-Access-Context: <directory ID>` on requests to login.microsoftonline.com,
  login.microsoft.com and login.windows.net (Microsoft Entra documentation).

The hosts are catalogued (google_workspace, microsoft_365), so they are intercepted.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Final

from schoolgate.config_reader import Node

GOOGLE_HOSTS: Final = frozenset(
    {
        "accounts.google.com",
        "mail.google.com",
        "drive.google.com",
        "docs.google.com",
        "classroom.google.com",
        "chat.google.com",
        "photos.google.com",
    }
)
MICROSOFT_LOGIN_HOSTS: Final = frozenset(
    {"login.microsoftonline.com", "login.microsoft.com", "login.windows.net"}
)
_DOMAIN: Final = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


@dataclass(frozen=True)
class TenantsConfig:
    """`tenants:`: the organisations pupils may sign in to (empty: anyone's)."""

    google_domains: tuple[str, ...] = ()
    microsoft_tenants: tuple[str, ...] = ()
    microsoft_tenant_id: str | None = None


def parse_tenants(node: Node) -> TenantsConfig:
    node.mapping(allowed={"google_domains", "microsoft_tenants", "microsoft_tenant_id"})
    lists = {}
    for key in ("google_domains", "microsoft_tenants"):
        names = []
        for child in node.child(key).elements():
            name = child.text().strip().lower()
            if not _DOMAIN.match(name):
                child.fail(f"{name!r} is not a domain name such as school.org")
            names.append(name)
        lists[key] = tuple(names)
    id_node = node.child("microsoft_tenant_id")
    tenant_id = id_node.optional_text()
    if tenant_id is not None:
        try:
            tenant_id = str(uuid.UUID(tenant_id))
        except ValueError:
            id_node.fail(
                "is not a directory (tenant) ID such as 72f988bf-86f1-41af-91ab-2d7cd011db47"
            )
        if not lists["microsoft_tenants"]:
            id_node.fail("needs microsoft_tenants: the tenant ID alone restricts nothing")
    return TenantsConfig(lists["google_domains"], lists["microsoft_tenants"], tenant_id)


def sign_in_only(host: str, tenants: TenantsConfig) -> bool:
    """A sign-in host that is catalogued only for the restriction, which is not configured: it
    is passed through (intercepting it would gain nothing and could break sign-in)."""
    if host == "accounts.google.com":
        return not tenants.google_domains
    if host in MICROSOFT_LOGIN_HOSTS:
        return not tenants.microsoft_tenants
    return False


def tenant_headers(host: str, tenants: TenantsConfig) -> dict[str, str]:
    """The headers to set on a request to `host` (a normalised host name)."""
    if host in GOOGLE_HOSTS and tenants.google_domains:
        return {"X-GooGApps-Allowed-Domains": ",".join(tenants.google_domains)}
    if host in MICROSOFT_LOGIN_HOSTS and tenants.microsoft_tenants:
        headers = {"Restrict-Access-To-Tenants": ",".join(tenants.microsoft_tenants)}
        if tenants.microsoft_tenant_id:
            headers["Restrict-Access-Context"] = tenants.microsoft_tenant_id
        return headers
    return {}
