"""Keeps the proxy's leaf certificates inside the CA's name constraints.

mitmproxy builds each leaf from the upstream certificate's names, the SNI and, in transparent mode,
the server's IP address. Under a name-constrained CA a single name outside the constraints makes
clients reject the whole certificate, so the names the CA may not vouch for are dropped first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509
from mitmproxy import certs, ctx

from schoolgate.gateway.ca import NamePolicy, name_policy

log = logging.getLogger("schoolgate.proxy")

type GetCert = Callable[..., certs.CertStoreEntry]


def constrained_names(
    policy: NamePolicy, commonname: str | None, sans: Iterable[x509.GeneralName]
) -> tuple[str | None, list[x509.GeneralName]]:
    """The leaf's CN and SANs with every name the CA may not vouch for removed.

    If nothing is left the names are kept: the client refuses that certificate either way, and
    mitmproxy needs a name to build one.
    """
    names = list(sans)
    kept = [name for name in names if policy.permits(name)]
    if not kept:
        return commonname, names
    cn = next((str(n.value) for n in kept if isinstance(n, x509.DNSName)), str(kept[0].value))
    return cn, kept


class LeafNames:
    """Wraps the CertStore that mitmproxy's TlsConfig loads, each time it loads one."""

    def configure(self, updated: set[str]) -> None:
        # TlsConfig comes earlier in the addon chain, so its new CertStore already exists here.
        self._wrap()

    def running(self) -> None:
        self._wrap()

    def _wrap(self) -> None:
        tlsconfig = ctx.master.addons.get("tlsconfig")  # type: ignore[no-untyped-call]
        store: certs.CertStore | None = getattr(tlsconfig, "certstore", None)
        if store is None or getattr(store, "_schoolgate_leaf_names", False):
            return
        policy = name_policy(store.default_ca.to_cryptography())
        if not policy.constrained and not policy.excluded_networks:
            log.warning("the proxy's CA has no name constraints; leaf names are not filtered")
            return
        original: GetCert = store.get_cert

        def get_cert(
            commonname: str | None, sans: Iterable[x509.GeneralName], *args: Any, **kwargs: Any
        ) -> certs.CertStoreEntry:
            cn, kept = constrained_names(policy, commonname, sans)
            return original(cn, kept, *args, **kwargs)

        # An instance attribute shadows the method for this store only.
        setattr(store, "get_cert", get_cert)  # noqa: B010
        setattr(store, "_schoolgate_leaf_names", True)  # noqa: B010
