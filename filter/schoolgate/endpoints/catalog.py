"""The endpoint catalog: which hosts belong to which sharing app, and how each app uploads media.

The packaged `schoolgate.defaults/endpoints.yaml` is always loaded first; user files add apps or
replace them by name. Everything is validated at load (errors name the file, key path and
problem) and compiled into dict-based host indexes, so a lookup per TLS handshake or request is a
handful of dict probes, not a scan of regexes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from schoolgate.endpoints.hosts import HostIndex, host_matches, normalize_host
from schoolgate.endpoints.jsonpath import JsonPath
from schoolgate.endpoints.providers import Provider, ProviderRanges

type BodyFormat = Literal["multipart", "raw", "json_base64", "form_base64", "auto"]


type Protocol = Literal[
    "x_chunked",
    "google_resumable",
    "instagram_rupload",
    "content_range",
    "dropbox_session",
    "facebook_resumable",
    "s3_parts",
    "tus",
    "sharepoint_chunks",
]


type Inspection = Literal["full", "pinned_native", "none"]


type NotInspectableAction = Literal["block_by_sni", "allow_and_log"]


BODY_FORMATS: Final[tuple[BodyFormat, ...]] = (
    "multipart",
    "raw",
    "json_base64",
    "form_base64",
    "auto",
)


PROTOCOLS: Final[tuple[Protocol, ...]] = (
    "x_chunked",
    "google_resumable",
    "instagram_rupload",
    "content_range",
    "dropbox_session",
    "facebook_resumable",
    "s3_parts",
    "tus",
    "sharepoint_chunks",
)


INSPECTIONS: Final[tuple[Inspection, ...]] = ("full", "pinned_native", "none")


ACTIONS: Final[tuple[NotInspectableAction, ...]] = ("block_by_sni", "allow_and_log")


_METHODS: Final = frozenset({"*", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})


# Responses we parse for learn rules are small JSON documents; a cap keeps a hostile server cheap.
MAX_LEARN_BODY_BYTES: Final = 1 << 20


def _compile_path(glob: str) -> re.Pattern[str]:
    """`*` matches within one path segment, `**` across segments; the rest is literal."""
    if not glob.startswith("/"):
        raise ValueError(f"{glob!r}: a path pattern must start with '/'")
    parts = re.split(r"(\*\*|\*)", glob)
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    # Servers differ in how they read a path; a route must hold every spelling that one of them
    # would route to the same handler, so case is ignored (and `normalize_path` does the rest).
    return re.compile(f"^{regex.rstrip('/') or '/'}/?$", re.IGNORECASE)


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def normalize_path(path: str) -> str:
    """A request path as a lenient server reads it: percent-escapes of anything but `/`, `?`,
    `#` and `%` decoded, repeated slashes collapsed, `.` and `..` segments resolved."""

    def unescape(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return match.group(0) if char in "/?#%" else char

    decoded = _ESCAPE.sub(unescape, path)
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    tail = "/" if decoded.endswith("/") and segments else ""
    return "/" + "/".join(segments) + tail


def _compile_value_glob(glob: str) -> re.Pattern[str]:
    regex = "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", glob))
    return re.compile(f"^{regex}$")


_WRITES: Final = frozenset({"PUT", "POST", "PATCH"})
_SESSION_URLS: Final = frozenset({"google_resumable", "content_range", "tus"})


@dataclass(frozen=True)
class UploadRoute:
    """One way an app uploads media: method, path glob, optional query conditions and hosts.

    `body` says how to find media in one request; `protocol` names a multi-request upload
    scheme handled by `schoolgate.reassembly` (None: each request stands alone).
    """

    method: str
    path: str
    body: BodyFormat
    protocol: Protocol | None = None
    hosts: tuple[str, ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    json_paths: tuple[str, ...] = ()
    _path_re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _query_re: tuple[tuple[str, re.Pattern[str]], ...] = field(
        default=(), repr=False, compare=False
    )

    def matches(self, host: str, method: str, path: str) -> bool:
        """Whether a request (path may carry a query string) is this route. A resumable
        session's URL takes its chunks and its last request by any write method the service
        may honour: PATCH or POST to a session catalogued for PUT finalised it unjudged
        (adversarial pass a40 F3)."""
        if self.method != "*" and method.upper() != self.method:
            writes = self.protocol in _SESSION_URLS and self.method in _WRITES
            if not (writes and method.upper() in _WRITES):
                return False
        if self.hosts and not host_matches(host, self.hosts):
            return False
        bare, _, query = path.partition("?")
        pattern = self._path_re or _compile_path(self.path)
        if pattern.match(normalize_path(bare)) is None:
            return False
        if not self._query_re:
            return True
        # Any value of a repeated key counts: servers disagree on whether the first or the last
        # one wins. Bounded by the query's length, never by a field count that could raise.
        params: dict[str, list[str]] = {}
        for key, value in parse_qsl(query[:8192], keep_blank_values=True):
            params.setdefault(key, []).append(value)
        return all(
            any(regex.match(value) for value in params.get(key, ()))
            for key, regex in self._query_re
        )


@dataclass(frozen=True)
class LearnRule:
    """A response that hands out an upload host (e.g. Discord's `upload_url`).

    The rule applies to responses of requests matching `method`/`path` (and `hosts` when
    given); the URL is read from a JSON path (`source="json"`) or a header (`source="header"`).
    Only hosts matching `allow_hosts` are learnt, so a response cannot widen interception to
    arbitrary sites. Uploads to a learnt host are handled as `upload`.
    """

    method: str
    path: str
    source: Literal["json", "header"]
    key: str
    allow_hosts: tuple[str, ...]
    upload: UploadRoute
    hosts: tuple[str, ...] = ()
    _trigger: UploadRoute | None = field(default=None, repr=False, compare=False)

    def applies_to(self, host: str, method: str, path: str) -> bool:
        """Whether the response to this request should be read by this rule."""
        trigger = self._trigger or UploadRoute(self.method, self.path, "raw", hosts=self.hosts)
        return trigger.matches(host, method, path)

    def learn(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes
    ) -> list[str]:
        """Hosts (normalised, allowed, de-duplicated) named by a response's header or JSON body."""
        urls: list[str] = []
        if self.source == "header":
            items = headers.items() if isinstance(headers, Mapping) else headers
            wanted = self.key.lower()
            urls = [value for name, value in items if name.lower() == wanted]
        elif 0 < len(body) <= MAX_LEARN_BODY_BYTES:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                return []
            urls = [v for v in JsonPath.parse(self.key).find(document) if isinstance(v, str)]
        hosts: list[str] = []
        for url in urls:
            host = _url_host(url)
            if host and host_matches(host, self.allow_hosts) and host not in hosts:
                hosts.append(host)
        return hosts


def _url_host(url: str) -> str | None:
    """Host of an absolute or protocol-relative (`//host/path`) URL; None for anything else."""
    text = url.strip()
    if text.startswith("//"):
        text = "https:" + text
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return normalize_host(parts.hostname)


@dataclass(frozen=True)
class App:
    """A sharing app: its hosts, upload routes, download CDNs, learn rules and inspectability.

    `inspection`: "full" (plain HTTP after interception for every client), "pinned_native"
    (browsers/web clients inspectable, the native apps pin certificates so their handshakes
    fail) or "none" (E2E-encrypted media or non-HTTP protocol: never intercepted).
    `when_not_inspectable` is applied to traffic that cannot be inspected.
    """

    name: str
    display_name: str
    hosts: tuple[str, ...]
    inspection: Inspection
    when_not_inspectable: NotInspectableAction
    upload_routes: tuple[UploadRoute, ...] = ()
    download_hosts: tuple[str, ...] = ()
    learn_rules: tuple[LearnRule, ...] = ()
    source: str = ""
    # Known members of the app's wildcards (upload hosts a client may reach by its own lookup):
    # the gateway resolves them ahead too, so their addresses are known as catalogued.
    resolve: tuple[str, ...] = ()


@dataclass(frozen=True)
class LearntHost:
    """A host handed out by an app's response, with the rule that learnt it."""

    host: str
    app: App
    rule: LearnRule
    expires_at: float


# Every other request with a body to an intercepted host: held and judged by its structure.
ANY_REQUEST: Final = UploadRoute("*", "/**", "auto")


class Catalog:
    """The loaded, validated catalog with fast host lookups. Immutable; safe to share."""

    def __init__(self, apps: Sequence[App], providers: Sequence[Provider] = ()) -> None:
        self.apps: tuple[App, ...] = tuple(apps)
        # Shared servers that carry catalogued apps: never fast-pathed (see providers.py).
        self.providers = ProviderRanges(providers)
        self._by_name = {app.name: app for app in self.apps}
        self._hosts: HostIndex[App] = HostIndex()
        self._downloads: HostIndex[App] = HostIndex()
        self._learnable: HostIndex[App] = HostIndex()
        for app in self.apps:
            for pattern in app.hosts:
                self._hosts.add(pattern, app)
            for pattern in app.download_hosts:
                self._downloads.add(pattern, app)
            for rule in app.learn_rules:
                for pattern in rule.allow_hosts:
                    self._learnable.add(pattern, app)

    def app(self, name: str) -> App | None:
        """The app called `name`."""
        return self._by_name.get(name)

    def app_for_host(self, host: str) -> App | None:
        """The app a host (SNI or Host header) belongs to: its hosts first, then its CDNs, then
        the upload hosts its learn rules may hand out. Those are the app's before any reply
        names them: a connection opened to one before the reply would otherwise pass unread."""
        found = (
            self._hosts.lookup(host) or self._downloads.lookup(host) or self._learnable.lookup(host)
        )
        return found[0] if found else None

    def download_app(self, host: str) -> App | None:
        """The app whose download CDN serves `host`."""
        found = self._downloads.lookup(host)
        return found[0] if found else None

    def upload_route(self, host: str, method: str, path: str) -> tuple[App, UploadRoute] | None:
        """The first upload route matching a request (`path` may include the query string)."""
        for app in self._hosts.lookup(host):
            for route in app.upload_routes:
                if route.matches(host, method, path):
                    return app, route
        return None

    def learn_rules(self, host: str, method: str, path: str) -> list[tuple[App, LearnRule]]:
        """The learn rules whose responses to this request hand out upload hosts."""
        return [
            (app, rule)
            for app in self._hosts.lookup(host)
            for rule in app.learn_rules
            if rule.applies_to(host, method, path)
        ]

    def inspected_domains(self) -> list[str]:
        """DNS names to intercept, minimal and sorted; each covers itself and its subdomains.

        This is the X.509 name-constraint list for the CA (RFC 5280 dNSName constraints cover
        subdomains), so it includes CDNs and hosts that learn rules may hand out. Apps with
        inspection "none" are left out: they are never intercepted.
        """
        names: set[str] = set()
        for app in self.apps:
            if app.inspection == "none":
                continue
            patterns = [*app.hosts, *app.download_hosts]
            patterns += [p for rule in app.learn_rules for p in rule.allow_hosts]
            names.update(p.removeprefix("*.") for p in patterns)
        return sorted(
            name for name in names if not any(parent in names for parent in _parents(name))
        )


def _parents(name: str) -> Iterator[str]:
    dot = name.find(".")
    while dot >= 0:
        yield name[dot + 1 :]
        dot = name.find(".", dot + 1)


class LearntHosts:
    """Hosts learnt from responses: exact host -> app, each for `ttl_s`, at most `max_hosts`.

    The oldest entries are evicted first when full. Thread-safe; `clock` is injectable.
    """

    def __init__(
        self,
        ttl_s: float = 3600.0,
        max_hosts: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_hosts <= 0:
            raise ValueError("ttl_s and max_hosts must be positive")
        self._ttl = ttl_s
        self._max = max_hosts
        self._clock = clock
        self._entries: OrderedDict[str, LearntHost] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, host: str, app: App, rule: LearnRule) -> None:
        """Remember (or refresh) a learnt host."""
        name = normalize_host(host)
        with self._lock:
            self._entries.pop(name, None)
            self._entries[name] = LearntHost(name, app, rule, self._clock() + self._ttl)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def get(self, host: str) -> LearntHost | None:
        """The live entry for `host`, or None (expired entries are dropped here)."""
        name = normalize_host(host)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                del self._entries[name]
                return None
            return entry

    def upload_route(self, host: str, method: str, path: str) -> tuple[App, UploadRoute] | None:
        """The learnt upload route for a request to a learnt host."""
        entry = self.get(host)
        if entry is None or not entry.rule.upload.matches(host, method, path):
            return None
        return entry.app, entry.rule.upload

    def purge(self) -> int:
        """Drop expired entries; returns how many were dropped."""
        now = self._clock()
        with self._lock:
            stale = [name for name, entry in self._entries.items() if entry.expires_at <= now]
            for name in stale:
                del self._entries[name]
            return len(stale)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
