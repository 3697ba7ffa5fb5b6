"""The `alerts:` configuration section: outbox, DSL receivers, retries, de-duplication, guidance.

Parsed here (not in `config.py`) so the alerts package owns its options; `config.py` calls
`parse_alerts` for its section. Secrets named by `secret_file` / `password_file` are read at load
time, so a missing or unreadable file is a configuration error, not a failed delivery at 3 a.m.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from schoolgate.config_reader import Node

FORMATS = ("generic", "teams", "slack")
SMTP_SECURITY = ("starttls", "tls", "none")
_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}

DEFAULT_GUIDANCE = (
    "Do not open, view, copy, save, screenshot or forward the image or video, and do not ask the "
    "pupil to show it to you. This alert holds only hashes and device details, never the media. "
    "Follow the school's safeguarding procedure: record the alert and act on it as the Designated "
    "Safeguarding Lead (or deputy) decides."
)


@dataclass(frozen=True)
class ReceiverConfig:
    """One webhook that gets every alert (the DSL's Teams channel, Slack, a case system)."""

    name: str
    url: str
    format: str = "generic"  # generic | teams | slack
    secret: bytes | None = field(default=None, repr=False)  # HMAC-SHA256 key for the signature
    timeout_s: float = 10.0
    ca_file: Path | None = None  # extra CA bundle for an internal receiver
    # Only alerts about devices in these policy groups (one school's DSL where a gateway serves
    # several); none: every alert (the school's DSL, or a trust's safeguarding lead).
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmtpConfig:
    """Optional email to the DSL's mailbox."""

    host: str
    sender: str
    to: tuple[str, ...]
    port: int = 587
    security: str = "starttls"  # starttls | tls | none
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0
    name: str = "email"
    groups: tuple[str, ...] = ()  # as ReceiverConfig.groups


@dataclass(frozen=True)
class AlertsConfig:
    outbox: Path
    receivers: tuple[ReceiverConfig, ...] = ()
    smtp: SmtpConfig | None = None
    guidance: str = DEFAULT_GUIDANCE
    # The same media from the same device within this many seconds is one alert with a count.
    dedup_window_s: float = 600.0
    retry_base_s: float = 10.0
    retry_max_s: float = 900.0
    # Undelivered after this long (72 h: a weekend) the alert is dead-lettered for a person to see.
    dead_after_s: float = 259_200.0
    # Blocks that are only a fail policy at work (timeouts, overload, E2E apps refused by name) are
    # IT matters, recorded in the audit log and metrics; alerting them would bury the DSL.
    failure_blocks: bool = False
    # The DSL's console (console.base_url): alerts link to the incident there when set.
    console_url: str | None = None
    # Where the outbox last used is recorded (alerts.relocation); None: not followed (tests).
    data_dir: Path | None = None

    @property
    def channel_names(self) -> tuple[str, ...]:
        names = tuple(r.name for r in self.receivers)
        return (*names, self.smtp.name) if self.smtp is not None else names


def parse_alerts(node: Node, data_dir: Path) -> AlertsConfig:
    """Validate the `alerts:` section (ConfigError names the key path and the problem)."""
    node.mapping(
        allowed={
            "outbox",
            "receivers",
            "smtp",
            "guidance",
            "dedup_window_s",
            "retry_base_s",
            "retry_max_s",
            "dead_after_s",
            "failure_blocks",
        }
    )
    defaults = AlertsConfig(outbox=Path())
    outbox = node.child("outbox").path_value() or Path("alerts.sqlite")
    receivers: list[ReceiverConfig] = []
    for child in node.child("receivers").elements():
        receiver = _receiver(child)
        if any(r.name == receiver.name for r in receivers):
            child.child("name").fail(f"duplicate receiver name {receiver.name!r}")
        receivers.append(receiver)
    smtp_node = node.child("smtp")
    smtp = None if smtp_node.missing else _smtp(smtp_node)
    if smtp is not None and any(r.name == smtp.name for r in receivers):
        smtp_node.child("name").fail(f"{smtp.name!r} is also a receiver name")
    base = node.child("retry_base_s").number(defaults.retry_base_s, minimum=0.01)
    maximum_node = node.child("retry_max_s")
    maximum = maximum_node.number(defaults.retry_max_s, minimum=0.01)
    if maximum < base:
        maximum_node.fail(f"{maximum} is below retry_base_s ({base})")
    guidance = node.child("guidance").text(defaults.guidance).strip()
    if not guidance:
        node.child("guidance").fail("must say what the DSL should do (or leave it out)")
    return AlertsConfig(
        outbox=outbox if outbox.is_absolute() else data_dir / outbox,
        receivers=tuple(receivers),
        smtp=smtp,
        guidance=guidance,
        dedup_window_s=node.child("dedup_window_s").number(defaults.dedup_window_s, minimum=0),
        retry_base_s=base,
        retry_max_s=maximum,
        dead_after_s=node.child("dead_after_s").number(defaults.dead_after_s, minimum=1),
        failure_blocks=node.child("failure_blocks").flag(defaults.failure_blocks),
        data_dir=data_dir,
    )


def _receiver(node: Node) -> ReceiverConfig:
    node.mapping(
        allowed={
            "name",
            "url",
            "format",
            "secret",
            "secret_file",
            "timeout_s",
            "ca_file",
            "allow_plain_http",
            "groups",
        }
    )
    name = node.child("name").text()
    if not name.strip():
        node.child("name").fail("must not be empty")
    fmt = node.child("format").choice(FORMATS, "generic")
    url_node = node.child("url")
    url = url_node.text()
    _check_url(url_node, url, allow_plain_http=node.child("allow_plain_http").flag(False))
    secret = _secret(node, "secret", "secret_file")
    if secret is None and fmt == "generic":
        node.fail(
            "a generic receiver needs a secret or secret_file: receivers verify the "
            "X-Schoolgate-Signature with it"
        )
    ca_node = node.child("ca_file")
    ca_file = ca_node.path_value()
    if ca_file is not None and not ca_file.is_file():
        ca_node.fail(f"{ca_file} is not a readable file")
    return ReceiverConfig(
        name=name,
        url=url,
        format=fmt,
        secret=secret.encode() if secret is not None else None,
        timeout_s=node.child("timeout_s").number(10.0, minimum=0.1, maximum=300),
        ca_file=ca_file,
        groups=_groups(node.child("groups")),
    )


def _groups(node: Node) -> tuple[str, ...]:
    """A receiver's policy groups (checked against `policy.groups` by config.load)."""
    return tuple(child.text() for child in node.elements())


def _check_url(node: Node, url: str, *, allow_plain_http: bool) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        node.fail(f"{url!r} is not a valid URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        node.fail(f"{url!r} is not an http(s) URL such as https://example.org/hook")
    if any(c.isspace() for c in url):
        node.fail(f"{url!r} contains white space")
    del port
    if parts.scheme == "http" and not allow_plain_http and not _is_loopback(parts.hostname):
        node.fail(
            "alerts carry pupils' device details: use https:// (plain http is allowed to "
            "loopback only, unless allow_plain_http: true)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(node: Node, key: str, file_key: str) -> str | None:
    """A secret given inline or in a file (whose trailing newline is not part of it)."""
    inline = node.child(key)
    file_node = node.child(file_key)
    if not inline.missing and not file_node.missing:
        file_node.fail(f"give either {key} or {file_key}, not both")
    if not inline.missing:
        value = inline.text()
        if not value.strip():
            inline.fail("must not be empty")
        return value
    path = file_node.path_value()
    if path is None:
        return None
    try:
        value = path.read_text("utf-8").rstrip("\r\n")
    except FileNotFoundError:
        file_node.fail(f"{path}: file not found")
    except (OSError, UnicodeDecodeError) as exc:
        file_node.fail(f"{path}: cannot be read: {exc}")
    if not value.strip():
        file_node.fail(f"{path} is empty")
    return value


def _smtp(node: Node) -> SmtpConfig:
    node.mapping(
        allowed={
            "name",
            "host",
            "port",
            "security",
            "from",
            "to",
            "username",
            "password",
            "password_file",
            "timeout_s",
            "groups",
        }
    )
    security = node.child("security").choice(SMTP_SECURITY, "starttls")
    to = tuple(child.text() for child in node.child("to").elements())
    if not to:
        node.child("to").fail("give at least one address, e.g. [dsl@school.example]")
    for child, address in zip(node.child("to").elements(), to, strict=True):
        if "@" not in address or any(c.isspace() for c in address):
            child.fail(f"{address!r} is not an email address")
    sender = node.child("from").text()
    if "@" not in sender:
        node.child("from").fail(f"{sender!r} is not an email address")
    username = node.child("username").optional_text()
    password = _secret(node, "password", "password_file")
    if (username is None) != (password is None):
        node.fail("give both username and password (or password_file), or neither")
    return SmtpConfig(
        name=node.child("name").text("email"),
        host=node.child("host").text(),
        port=node.child("port").integer(_SMTP_PORTS[security], minimum=1, maximum=65535),
        security=security,
        sender=sender,
        to=to,
        username=username,
        password=password,
        timeout_s=node.child("timeout_s").number(20.0, minimum=0.1, maximum=300),
        groups=_groups(node.child("groups")),
    )
