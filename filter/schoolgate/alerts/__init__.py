"""DSL alerts that are never lost: a durable SQLite outbox, signed webhooks, email.

Public API: `verify_signature` for receivers, `AlertOutbox` / `OutboxStats` and the sender's
`on_attempt` hook for metrics, `AlertService` for the appliance.
"""

from __future__ import annotations

from schoolgate.alerts.model import Alert, AlertDetails, AlertRule, Device
from schoolgate.alerts.outbox import AlertOutbox, OutboxError, OutboxStats
from schoolgate.alerts.receivers import OUTCOMES, Attempt, EmailReceiver, WebhookReceiver
from schoolgate.alerts.sender import AlertSender, RetryPolicy
from schoolgate.alerts.service import AlertService
from schoolgate.alerts.settings import AlertsConfig, ReceiverConfig, SmtpConfig
from schoolgate.alerts.signing import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    verify_signature,
)

__all__ = [
    "ALERT_ID_HEADER",
    "OUTCOMES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Alert",
    "AlertDetails",
    "AlertOutbox",
    "AlertRule",
    "AlertSender",
    "AlertService",
    "AlertsConfig",
    "Attempt",
    "Device",
    "EmailReceiver",
    "OutboxError",
    "OutboxStats",
    "ReceiverConfig",
    "RetryPolicy",
    "SmtpConfig",
    "WebhookReceiver",
    "signature",
    "verify_signature",
]
