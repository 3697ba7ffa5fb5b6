"""`schoolgate alerts test | list | retry`: try the receivers, see the outbox, re-drive it."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schoolgate.alerts import relocation
from schoolgate.alerts.model import KIND_TEST, Alert, AlertDetails, Device
from schoolgate.alerts.outbox import STATES
from schoolgate.alerts.sender import AttemptResult
from schoolgate.alerts.service import (
    build_receivers,
    build_sender,
    open_outbox,
    placer,
    policy_groups,
)
from schoolgate.alerts.settings import AlertsConfig
from schoolgate.config import load_config
from schoolgate.errors import SchoolgateError

if TYPE_CHECKING:
    from schoolgate.config import Config

EXIT_OK = 0


class AlertsError(SchoolgateError):
    """An alerts command could not do what was asked (no receiver, a failed delivery)."""


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    alerts = sub.add_parser("alerts", help="DSL alerts: test the receivers, list and retry")
    asub = alerts.add_subparsers(metavar="ACTION")

    test = asub.add_parser(
        "test", parents=[common], help="send a test alert now to every receiver (not stored)"
    )
    test.add_argument("--receiver", metavar="NAME", help="only this receiver")
    test.set_defaults(handler=_test)

    listing = asub.add_parser("list", parents=[common], help="show the outbox, newest first")
    listing.add_argument("--state", choices=(*STATES, "all"), default="all")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=_list)

    retry = asub.add_parser(
        "retry",
        parents=[common],
        help="make dead and pending alerts due now, then deliver once",
    )
    retry.add_argument("ids", nargs="*", metavar="ALERT_ID", help="only these (default: all)")
    retry.add_argument(
        "--no-send", action="store_true", help="only mark them due (a running proxy sends them)"
    )
    retry.set_defaults(handler=_retry)


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def test_alert(config: Config) -> Alert:
    """A clearly-labelled test alert: no pupil, no device, no media."""
    now = time.time()
    details = AlertDetails(
        decided_at=datetime.fromtimestamp(now, UTC).isoformat(),
        action="allow",
        mode="test",
        would_block=False,
        group="-",
        direction="test",
        app=None,
        host=None,
        device=Device(),
        site=config.proxy.school_name,
    )
    return Alert(
        id=uuid.uuid4().hex,
        kind=KIND_TEST,
        state="pending",
        dedup_key="test",
        details=details,
        first_seen=now,
        last_seen=now,
    )


def _test(args: argparse.Namespace) -> int:
    config = _config(args)
    receivers = build_receivers(config.alerts, config.policy.timezone)
    if args.receiver:
        receivers = [r for r in receivers if r.name == args.receiver]
        if not receivers:
            names = ", ".join(config.alerts.channel_names) or "none"
            raise AlertsError(f"no receiver named {args.receiver!r} (configured: {names})")
    if not receivers:
        raise AlertsError("no alert receiver is configured (alerts.receivers / alerts.smtp)")
    alert = test_alert(config)
    failed = []
    for receiver in receivers:
        attempt = receiver.deliver(alert)
        print(f"{receiver.name}: {attempt.outcome} ({attempt.detail})")
        if not attempt.delivered:
            failed.append(receiver.name)
    if failed:
        raise AlertsError(f"test alert {alert.id} not delivered to {', '.join(failed)}")
    print(f"test alert {alert.id} delivered")
    return EXIT_OK


def alert_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "state": alert.state,
        "kind": alert.kind,
        "count": alert.count,
        "first_seen": datetime.fromtimestamp(alert.first_seen, UTC).isoformat(),
        "last_seen": datetime.fromtimestamp(alert.last_seen, UTC).isoformat(),
        "follow_up_of": alert.follow_up_of,
        "audit_ids": list(alert.audit_ids),
        "attempts": alert.attempts,
        "last_error": alert.last_error,
        "delivered_to": list(alert.delivered_to),
        "details": asdict(alert.details),
    }


def _say_stranded(alerts: AlertsConfig) -> None:
    """Alerts still in the outbox used before the configuration moved it: the running
    appliance moves them at its next start or reload, never this command (a43 F3)."""
    if alerts.data_dir is not None:
        for note in relocation.notes(alerts.outbox, alerts.data_dir):
            print(f"schoolgate: note: {note}", file=sys.stderr)


def _list(args: argparse.Namespace) -> int:
    config = _config(args)
    state = None if args.state == "all" else args.state
    _say_stranded(config.alerts)
    with open_outbox(config.alerts) as outbox:
        alerts = outbox.list(state, args.limit)
        stats = outbox.stats()
    if args.json:
        for alert in alerts:
            print(json.dumps(alert_dict(alert)))
        return EXIT_OK
    tz = config.policy.timezone
    for alert in alerts:
        details = alert.details
        when = datetime.fromtimestamp(alert.first_seen, tz).strftime("%Y-%m-%d %H:%M:%S")
        what = ", ".join(f"bank {m.bank}" for m in details.matches) or ", ".join(
            f"{f.model}:{f.label}" for f in details.flags
        )
        print(
            f"{when}  {alert.state:<9} x{alert.count:<3} {details.action:<5} "
            f"{details.app or '-':<12} {details.device.label():<32} {what or details.failure}"
        )
        sent = ", ".join(alert.delivered_to) or "nobody yet"
        error = f"; last error: {alert.last_error}" if alert.last_error else ""
        print(f"    id {alert.id}  attempts {alert.attempts}  delivered to {sent}{error}")
    print(
        f"{len(alerts)} shown; outbox: {stats.pending} pending "
        f"(oldest {stats.oldest_pending_age_s:.0f} s), {stats.dead} dead"
    )
    if not config.alerts.channel_names:
        print("no receiver is configured: alerts stay pending until one is (alerts.receivers)")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    config = _config(args)
    _say_stranded(config.alerts)
    with open_outbox(config.alerts) as outbox:
        if args.ids:
            unknown = [i for i in args.ids if outbox.get(i) is None]
            if unknown:
                raise AlertsError(f"no alert with id {', '.join(unknown)}")
        revived = outbox.retry(args.ids)
        print(f"{revived} alert(s) due now")
        if args.no_send:
            return EXIT_OK
        if not config.alerts.channel_names:
            raise AlertsError("no alert receiver is configured (alerts.receivers / alerts.smtp)")
        sender = build_sender(config.alerts, outbox, config.policy.timezone,
                              groups=policy_groups(config), place=placer(config))  # fmt: skip
        results = sender.deliver_due()
    _report(results)
    failed = [r for r in results if not r.attempt.delivered]
    if failed:
        raise AlertsError(
            f"{len(failed)} deliveries failed; they stay in the outbox and are retried"
        )
    return EXIT_OK


def _report(results: list[AttemptResult]) -> None:
    for result in results:
        attempt = result.attempt
        print(f"{result.alert_id} -> {result.receiver}: {attempt.outcome} ({attempt.detail})")
    delivered = sum(r.attempt.delivered for r in results)
    print(f"{delivered} of {len(results)} deliveries succeeded")
