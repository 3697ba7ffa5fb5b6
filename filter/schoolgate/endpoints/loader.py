"""Loading the endpoint catalog: the packaged `schoolgate.defaults/endpoints.yaml` first, then the
site's own files, each validated with errors that name the file, the key path and the problem."""

from __future__ import annotations

import importlib.resources
import ipaddress
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, cast

import yaml

from schoolgate.endpoints.catalog import (
    _METHODS,
    ACTIONS,
    BODY_FORMATS,
    INSPECTIONS,
    PROTOCOLS,
    App,
    Catalog,
    LearnRule,
    Protocol,
    UploadRoute,
    _compile_path,
    _compile_value_glob,
)
from schoolgate.endpoints.hosts import check_pattern, host_matches
from schoolgate.endpoints.jsonpath import JsonPath
from schoolgate.endpoints.providers import Provider
from schoolgate.errors import ConfigError

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
    providers: dict[str, Provider] = {}
    _merge(apps, providers, text, DEFAULT_SOURCE)
    for path in paths:
        try:
            user_text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(str(path), "", f"cannot read the file: {error}") from error
        _merge(apps, providers, user_text, str(path))
    return Catalog(list(apps.values()), list(providers.values()))


def parse_catalog(text: str, source: str = "<string>") -> Catalog:
    """Build a catalog from YAML text alone (no packaged defaults); mainly for tests and tools."""
    apps: dict[str, App] = {}
    providers: dict[str, Provider] = {}
    _merge(apps, providers, text, source)
    return Catalog(list(apps.values()), list(providers.values()))


def _merge(apps: dict[str, App], providers: dict[str, Provider], text: str, source: str) -> None:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, "", f"not valid YAML: {error}") from error
    reader = _Reader(source)
    root = reader.mapping(document, "", {"version", "apps", "providers"})
    if "apps" not in root and "providers" not in root:
        raise ConfigError(source, "apps", "required key is missing")
    version = root.get("version", 1)
    if version != 1:
        raise ConfigError(source, "version", f"unsupported catalog version {version!r}")
    for name, entry in reader.mapping(root.get("providers", {}), "providers").items():
        key = f"providers.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
            raise ConfigError(source, key, "a provider name is lower-case letters, digits or _")
        if isinstance(entry, dict) and entry.get("enabled") is False:
            providers.pop(name, None)
            continue
        providers[name] = reader.provider(name, entry, key)
    entries = reader.mapping(root.get("apps", {}), "apps")
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
                result.append(check_pattern(item))
            except ValueError as error:
                raise self.fail(f"{key}[{index}]", str(error)) from error
        return tuple(result)

    def provider(self, name: str, value: object, key: str) -> Provider:
        data = self.mapping(value, key, {"source", "serves", "ranges", "enabled"},
                            required=("source", "ranges"))  # fmt: skip
        serves = data.get("serves", [])
        if not isinstance(serves, list) or not all(isinstance(s, str) for s in serves):
            raise self.fail(f"{key}.serves", "expected a list of app names")
        ranges_value = data["ranges"]
        if not isinstance(ranges_value, list) or not ranges_value:
            raise self.fail(f"{key}.ranges", "expected a non-empty list of address ranges")
        ranges = []
        for index, item in enumerate(ranges_value):
            try:
                network = ipaddress.ip_network(str(item), strict=True)
            except ValueError as error:
                raise self.fail(f"{key}.ranges[{index}]", f"not a range: {error}") from None
            if network.prefixlen < (8 if network.version == 4 else 19):
                # A typo such as 0.0.0.0/0 would quietly turn the fast path off for everything.
                raise self.fail(f"{key}.ranges[{index}]", f"{network} is wider than any provider's")
            ranges.append(network)
        return Provider(name, self.string(data["source"], f"{key}.source"), tuple(serves),
                        tuple(ranges))  # fmt: skip

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
                "resolve",
                "learn",
                "enabled",
                "note",
            },
            required=("hosts", "inspection", "when_not_inspectable"),
        )
        hosts = self.patterns(data["hosts"], f"{key}.hosts")
        if not hosts:
            raise self.fail(f"{key}.hosts", "an app needs at least one host pattern")
        download_hosts = self.patterns(data.get("download_hosts", []), f"{key}.download_hosts")
        resolve = self.patterns(data.get("resolve", []), f"{key}.resolve")
        for index, host in enumerate(resolve):
            # Members of the app's wildcards only: a name of its own would be another app's.
            if host.startswith("*.") or not host_matches(host, (*hosts, *download_hosts)):
                raise self.fail(f"{key}.resolve[{index}]", f"{host} is not a name under the app's "
                                "wildcard hosts")  # fmt: skip
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
            download_hosts=download_hosts,
            resolve=resolve,
            learn_rules=tuple(
                self.learn_rule(item, f"{key}.learn[{i}]") for i, item in enumerate(learn_value)
            ),
            source=self.source,
        )
