"""A trust of many schools: the central box publishes signed bank bundles, and every gateway
follows them (`banks.subscriptions`), verifies each with the publisher's key, and applies it
atomically, keeping its last good banks when a bundle is refused.

Public API: `publish` (central box), `sync` and `Replica` (gateway), `Subscription` (settings),
`BundleError` (a refusal, with a reason for the metrics).
"""

from __future__ import annotations

from schoolgate.trust.bundle import BundleError
from schoolgate.trust.publish import publish
from schoolgate.trust.replica import Replica
from schoolgate.trust.settings import Subscription
from schoolgate.trust.subscribe import sync

__all__ = ["BundleError", "Replica", "Subscription", "publish", "sync"]
