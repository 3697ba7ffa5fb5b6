"""The addon list: `mitmdump -s addons/schoolgate/addons/entry.py` (schoolgate run uses
`make_addons` directly)."""

from __future__ import annotations

from schoolgate.addons.authority import AuthorityCheck
from schoolgate.addons.certnames import LeafNames
from schoolgate.addons.downloads import DownloadInspector
from schoolgate.addons.loader import ConfigLoader
from schoolgate.addons.onboarding import OnboardingServer
from schoolgate.addons.runtime import RuntimeRef
from schoolgate.addons.scope import Scope
from schoolgate.addons.subscriptions import BankSubscriptions
from schoolgate.addons.tenants import TenantRestrictions
from schoolgate.addons.uploads import UploadInspector
from schoolgate.addons.websockets import WebSocketInspector


def make_addons(ref: RuntimeRef) -> list[object]:
    """Every schoolgate addon over one runtime slot; the loader first, so it configures first."""
    return [
        ConfigLoader(ref),
        Scope(ref),
        AuthorityCheck(ref),  # before the inspectors: a misdirected request is never held
        TenantRestrictions(ref),  # sign-in only to the school's Workspace / 365 tenants
        OnboardingServer(ref),  # http://<gateway>/: the CA for pupils' own devices
        UploadInspector(ref),
        DownloadInspector(ref),
        WebSocketInspector(ref),
        LeafNames(),
        BankSubscriptions(ref),  # the trust's banks, kept current
    ]


addons = make_addons(RuntimeRef())
