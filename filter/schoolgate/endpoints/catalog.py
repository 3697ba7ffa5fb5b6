"""The endpoint catalog: which hosts belong to which sharing app, and how each app uploads media.

The packaged `schoolgate.defaults/endpoints.yaml` is always loaded first; user files add apps or
replace them by name. Everything is validated at load (errors name the file, key path and
problem) and compiled into dict-based host indexes, so a lookup per TLS handshake or request is a
handful of dict probes, not a scan of regexes.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import parse_qsl, urlsplit

import yaml

from schoolgate.errors import ConfigError

type BodyFormat = Literal["multipart", "raw", "json_base64", "form_base64", "auto"]
type Protocol = Literal[
    "x_chunked", "google_resumable", "instagram_rupload", "content_range", "dropbox_session"
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
)
INSPECTIONS: Final[tuple[Inspection, ...]] = ("full", "pinned_native", "none")
ACTIONS: Final[tuple[NotInspectableAction, ...]] = ("block_by_sni", "allow_and_log")
_METHODS: Final = frozenset({"*", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# Responses we parse for learn rules are small JSON documents; a cap keeps a hostile server cheap.
MAX_LEARN_BODY_BYTES: Final = 1 << 20


# ---------------------------------------------------------------------------------------------
# Hosts


def normalize_host(host: str) -> str:
    """Lower-case `host`, drop a port, brackets around IPv6 and a trailing dot; IDNA to ASCII."""
    value = host.strip()
    if value.startswith("["):
        end = value.find("]")
        value = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.rstrip(".").lower()
    if not value.isascii():
        try:
            value = value.encode("idna").decode("ascii")
        except UnicodeError:
            return value
    return value


def _check_pattern(pattern: str) -> str:
    """Return the normalised pattern or raise ValueError saying what is wrong with it."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("a host pattern must be a non-empty string")
    body = pattern[2:] if pattern.startswith("*.") else pattern
    if "*" in body:
        raise ValueError(f"{pattern!r}: only exact hosts and '*.suffix' patterns are allowed")
    host = normalize_host(body)
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{pattern!r} is not a valid DNS name")
    return f"*.{host}" if pattern.startswith("*.") else host


class HostIndex[T]:
    """Maps exact hosts and `*.suffix` patterns to values; lookup walks the labels of a host.

    `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com` itself. The
    most specific pattern wins; values added for the same pattern keep their order.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._suffix: dict[str, list[T]] = {}

    def add(self, pattern: str, value: T) -> None:
        """Add `value` under a pattern already checked by `_check_pattern`."""
        if pattern.startswith("*."):
            self._suffix.setdefault(pattern[2:], []).append(value)
        else:
            self._exact.setdefault(pattern, []).append(value)

    def lookup(self, host: str) -> list[T]:
        """Values for the most specific pattern matching `host` (empty when none does)."""
        name = normalize_host(host)
        found = self._exact.get(name)
        if found:
            return found
        dot = name.find(".")
        while dot >= 0:
            found = self._suffix.get(name[dot + 1 :])
            if found:
                return found
            dot = name.find(".", dot + 1)
        return []


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether `host` matches any exact or `*.suffix` pattern (patterns already normalised)."""
    name = normalize_host(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Paths and JSON paths


def _compile_path(glob: str) -> re.Pattern[str]:
    """`*` matches within one path segment, `**` across segments; the rest is literal."""
    if not glob.startswith("/"):
        raise ValueError(f"{glob!r}: a path pattern must start with '/'")
    parts = re.split(r"(\*\*|\*)", glob)
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(f"^{regex}$")


def _compile_value_glob(glob: str) -> re.Pattern[str]:
    regex = "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", glob))
    return re.compile(f"^{regex}$")


_JSON_TOKEN = re.compile(
    r"""\.\.(?P<deep>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\.(?P<name>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\[(?P<index>-?\d+|\*)\]"""
    r"""|\[['"](?P<quoted>[^'"\]]+)['"]\]"""
)


@dataclass(frozen=True)
class JsonPath:
    """A small JSONPath subset: `$`, `.name`, `..name` (any depth), `[n]`, `[*]`, `['a b']`."""

    text: str
    steps: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Parse `text` or raise ValueError."""
        if not isinstance(text, str) or not text.startswith("$"):
            raise ValueError(f"{text!r}: a JSON path must start with '$'")
        steps: list[tuple[str, str]] = []
        position = 1
        while position < len(text):
            match = _JSON_TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"{text!r}: cannot parse from position {position}")
            if match["deep"] is not None:
                steps.append(("deep", match["deep"]))
            elif match["name"] is not None:
                steps.append(("child", match["name"]))
            elif match["index"] is not None:
                steps.append(("index", match["index"]))
            else:
                steps.append(("child", match["quoted"]))
            position = match.end()
        return cls(text, tuple(steps))

    def find(self, document: object, max_depth: int = 64) -> list[object]:
        """Every value the path selects in a parsed JSON document (depth-bounded)."""
        current: list[object] = [document]
        for kind, arg in self.steps:
            following: list[object] = []
            for node in current:
                following.extend(_step(node, kind, arg, max_depth))
            current = following
        return current


def _children(node: object) -> Iterator[object]:
    if isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _step(node: object, kind: str, arg: str, max_depth: int) -> Iterator[object]:
    if kind == "child":
        if arg == "*":
            yield from _children(node)
        elif isinstance(node, dict) and arg in node:
            yield node[arg]
    elif kind == "index":
        if isinstance(node, list):
            if arg == "*":
                yield from node
            elif -len(node) <= int(arg) < len(node):
                yield node[int(arg)]
        elif isinstance(node, dict) and arg == "*":
            yield from node.values()
    else:  # "deep": the node itself and every descendant, breadth bounded by max_depth
        stack: list[tuple[object, int]] = [(node, 0)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                if arg == "*":
                    yield from item.values()
                elif arg in item:
                    yield item[arg]
            if depth < max_depth:
                stack.extend((child, depth + 1) for child in _children(item))


# ---------------------------------------------------------------------------------------------
# Catalog model


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
        """Whether a request (path may carry a query string) is this route."""
        if self.method != "*" and method.upper() != self.method:
            return False
        if self.hosts and not host_matches(host, self.hosts):
            return False
        bare, _, query = path.partition("?")
        pattern = self._path_re or _compile_path(self.path)
        if pattern.match(bare) is None:
            return False
        if not self._query_re:
            return True
        params = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=200))
        return all(key in params and regex.match(params[key]) for key, regex in self._query_re)


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


@dataclass(frozen=True)
class LearntHost:
    """A host handed out by an app's response, with the rule that learnt it."""

    host: str
    app: App
    rule: LearnRule
    expires_at: float


class Catalog:
    """The loaded, validated catalog with fast host lookups. Immutable; safe to share."""

    def __init__(self, apps: Sequence[App]) -> None:
        self.apps: tuple[App, ...] = tuple(apps)
        self._by_name = {app.name: app for app in self.apps}
        self._hosts: HostIndex[App] = HostIndex()
        self._downloads: HostIndex[App] = HostIndex()
        for app in self.apps:
            for pattern in app.hosts:
                self._hosts.add(pattern, app)
            for pattern in app.download_hosts:
                self._downloads.add(pattern, app)

    def app(self, name: str) -> App | None:
        """The app called `name`."""
        return self._by_name.get(name)

    def app_for_host(self, host: str) -> App | None:
        """The app a host (SNI or Host header) belongs to: its hosts first, then its CDNs."""
        found = self._hosts.lookup(host) or self._downloads.lookup(host)
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


# ---------------------------------------------------------------------------------------------
# Loading and validation


DEFAULT_SOURCE: Final = "schoolgate.defaults/endpoints.yaml"


def load_catalog(paths: Sequence[Path] = ()) -> Catalog:
    """Load the packaged catalog, then each user file in order (new apps added, same names replace).

    An app entry `{enabled: false}` in a user file removes that app. Raises ConfigError.
    """
    text = (
        importlib.resources.files("schoolgate.defaults")
        .joinpath("endpoints.yaml")
        .read_text(encoding="utf-8")
    )
    apps: dict[str, App] = {}
    _merge(apps, text, DEFAULT_SOURCE)
    for path in paths:
        try:
            user_text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(str(path), "", f"cannot read the file: {error}") from error
        _merge(apps, user_text, str(path))
    return Catalog(list(apps.values()))


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    """Build a catalog from YAML text alone (no packaged defaults); mainly for tests and tools."""
    apps: dict[str, App] = {}
    _merge(apps, text, source)
    return Catalog(list(apps.values()))


def _merge(apps: dict[str, App], text: str, source: str) -> None:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, "", f"not valid YAML: {error}") from error
    reader = _Reader(source)
    root = reader.mapping(document, "", {"version", "apps"}, required={"apps"})
    version = root.get("version", 1)
    if version != 1:
        raise ConfigError(source, "version", f"unsupported catalog version {version!r}")
    entries = reader.mapping(root["apps"], "apps")
    for name, entry in entries.items():
        key = f"apps.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
            raise ConfigError(source, key, "an app name must be lower-case letters, digits or _")
        if isinstance(entry, dict) and entry.get("enabled") is False:
            apps.pop(name, None)
            continue
        apps[name] = reader.app(name, entry, key)


class _Reader:
    """Turns parsed YAML into model objects, raising ConfigError with the exact key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def mapping(
        self,
        value: object,
        key: str,
        allowed: set[str] | None = None,
        required: Iterable[str] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        data = cast(dict[str, Any], value)
        if allowed is not None:
            unknown = sorted(str(k) for k in data if k not in allowed)
            if unknown:
                prefix = f"{key}." if key else ""
                raise self.fail(
                    f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        for name in required:
            if name not in data:
                prefix = f"{key}." if key else ""
                raise self.fail(f"{prefix}{name}", "required key is missing")
        return data

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a non-empty string")
        return value.strip()

    def choice[C: str](self, value: object, key: str, choices: tuple[C, ...]) -> C:
        for option in choices:
            if value == option:
                return option
        raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")

    def patterns(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, "expected a list of host patterns")
        result: list[str] = []
        for index, item in enumerate(value):
            try:
                result.append(_check_pattern(item))
            except ValueError as error:
                raise self.fail(f"{key}[{index}]", str(error)) from error
        return tuple(result)

    def route(self, value: object, key: str) -> UploadRoute:
        data = self.mapping(
            value,
            key,
            {"method", "path", "body", "protocol", "hosts", "query", "json_paths", "note"},
            required=("method", "path", "body"),
        )
        method = self.string(data["method"], f"{key}.method").upper()
        if method not in _METHODS:
            raise self.fail(f"{key}.method", f"{method!r} is not an HTTP method")
        path = self.string(data["path"], f"{key}.path")
        try:
            path_re = _compile_path(path)
        except ValueError as error:
            raise self.fail(f"{key}.path", str(error)) from error
        body = self.choice(data["body"], f"{key}.body", BODY_FORMATS)
        protocol: Protocol | None = None
        if data.get("protocol") is not None:
            protocol = self.choice(data["protocol"], f"{key}.protocol", PROTOCOLS)
        hosts = self.patterns(data.get("hosts", []), f"{key}.hosts")
        query_map = self.mapping(data.get("query", {}), f"{key}.query")
        query = tuple((str(k), self.string(v, f"{key}.query.{k}")) for k, v in query_map.items())
        paths_value = data.get("json_paths", [])
        if not isinstance(paths_value, list):
            raise self.fail(f"{key}.json_paths", "expected a list of JSON paths")
        json_paths: list[str] = []
        for index, item in enumerate(paths_value):
            try:
                json_paths.append(JsonPath.parse(item).text)
            except ValueError as error:
                raise self.fail(f"{key}.json_paths[{index}]", str(error)) from error
        if json_paths and body != "json_base64":
            raise self.fail(f"{key}.json_paths", "json_paths only apply to body: json_base64")
        return UploadRoute(
            method,
            path,
            body,
            protocol,
            hosts,
            query,
            tuple(json_paths),
            path_re,
            tuple((k, _compile_value_glob(v)) for k, v in query),
        )

    def learn_rule(self, value: object, key: str) -> LearnRule:
        data = self.mapping(
            value,
            key,
            {"method", "path", "hosts", "json", "header", "allow_hosts", "upload", "note"},
            required=("method", "path", "allow_hosts", "upload"),
        )
        if ("json" in data) == ("header" in data):
            raise self.fail(key, "give exactly one of 'json' (a JSON path) or 'header'")
        trigger = self.route(
            {k: data[k] for k in ("method", "path", "hosts") if k in data} | {"body": "raw"}, key
        )
        if "json" in data:
            source: Literal["json", "header"] = "json"
            text = self.string(data["json"], f"{key}.json")
            try:
                JsonPath.parse(text)
            except ValueError as error:
                raise self.fail(f"{key}.json", str(error)) from error
        else:
            source = "header"
            text = self.string(data["header"], f"{key}.header")
        allow = self.patterns(data["allow_hosts"], f"{key}.allow_hosts")
        if not allow:
            raise self.fail(f"{key}.allow_hosts", "at least one host pattern is required")
        upload_data = dict(self.mapping(data["upload"], f"{key}.upload"))
        upload_data.setdefault("path", "/**")
        upload = self.route(upload_data, f"{key}.upload")
        return LearnRule(
            trigger.method, trigger.path, source, text, allow, upload, trigger.hosts, trigger
        )

    def app(self, name: str, value: object, key: str) -> App:
        data = self.mapping(
            value,
            key,
            {
                "name",
                "hosts",
                "inspection",
                "when_not_inspectable",
                "upload_routes",
                "download_hosts",
                "learn",
                "enabled",
                "note",
            },
            required=("hosts", "inspection", "when_not_inspectable"),
        )
        hosts = self.patterns(data["hosts"], f"{key}.hosts")
        if not hosts:
            raise self.fail(f"{key}.hosts", "an app needs at least one host pattern")
        routes_value = data.get("upload_routes", [])
        learn_value = data.get("learn", [])
        for list_key, item in (("upload_routes", routes_value), ("learn", learn_value)):
            if not isinstance(item, list):
                raise self.fail(f"{key}.{list_key}", "expected a list")
        return App(
            name=name,
            display_name=self.string(data.get("name", name), f"{key}.name"),
            hosts=hosts,
            inspection=self.choice(data["inspection"], f"{key}.inspection", INSPECTIONS),
            when_not_inspectable=self.choice(
                data["when_not_inspectable"], f"{key}.when_not_inspectable", ACTIONS
            ),
            upload_routes=tuple(
                self.route(item, f"{key}.upload_routes[{i}]") for i, item in enumerate(routes_value)
            ),
            download_hosts=self.patterns(data.get("download_hosts", []), f"{key}.download_hosts"),
            learn_rules=tuple(
                self.learn_rule(item, f"{key}.learn[{i}]") for i, item in enumerate(learn_value)
            ),
            source=self.source,
        )
