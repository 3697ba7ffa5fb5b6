"""A trust of three schools (issue 21), each gateway in its own network namespace with its own
`schoolgate run`, and the trust's central box in another: `schoolgate banks publish` there, served
over HTTPS by a static web server, and `schoolgate banks sync` on each gateway (the test triggers
the poll). TEST-NET addresses only.

central ns (198.51.100.2: the banks' web server on :8443, a catalogued upload host on :443,
            the trust's Prometheus on :9090, scraping every gateway over TLS with basic auth)
  ├── gw1 ns (198.51.100.11)   each: `schoolgate run` on 127.0.0.1:8080 (metrics on its own
  ├── gw2 ns (198.51.100.12)   address, :9861), its own banks, and a client that uploads through
  └── gw3 ns (198.51.100.13)   it; /etc/netns/<ns>/hosts names the others (ip netns exec mounts
                               it over /etc/hosts)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from schoolgate.banks.store import BankStore
from tests.conftest import encode
from tests.e2e.test_proxy_transparent import NsProxy, start_proxy_in
from tests.support.dashboards import TRUST_DASHBOARD, queries, substitute
from tests.support.netns import SERVER_IP, _ip, call_in_netns, netns_exec, probe_netns, run_in
from tests.support.proxy_harness import (
    MEDIA_HOST,
    OTHER_HOST,
    REPO_ROOT,
    VENV_BIN,
    UpstreamPki,
    client_ssl_context,
    make_upstream_pki,
    multipart_body,
    start_upstream_in,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.netns]

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules" / "schoolgate.rules.yml"

BANKS_HOST = "banks.trust.test"
BANK = "trust-incidents"
SECOND = "trust-second"
PROXY_PORT = 8080
GATEWAYS = ("198.51.100.11", "198.51.100.12", "198.51.100.13")
SCHOOLS = ("north-academy", "south-academy", "west-academy")
PROMETHEUS = f"http://{SERVER_IP}:9090"


class _Files(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # no reverse lookup: no DNS leaves the namespaces
        self.server_name, self.server_port = SERVER_IP, self.server_address[1]


@dataclass
class Gateway:
    ns: str
    config: Path
    data_dir: Path
    proxy: NsProxy

    def schoolgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(self.data_dir)}
        env.pop("SCHOOLGATE_CONFIG", None)
        argv = netns_exec(
            self.ns, [str(VENV_BIN / "schoolgate"), *args, "--config", str(self.config)]
        )
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, check=False
        )

    def sync(self) -> str:
        return self.schoolgate("banks", "sync").stdout

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.schoolgate("banks", "subscriptions", "--json").stdout))

    def upload(self, data: bytes, pki: UpstreamPki) -> int:
        trust = client_ssl_context(self.proxy.ca_pem, pki.ca_pem)
        body, content_type = multipart_body("file", "photo.jpg", data, "image/jpeg")

        def post() -> int:
            with httpx.Client(
                proxy=f"http://127.0.0.1:{PROXY_PORT}", verify=trust, timeout=60
            ) as client:
                return client.post(
                    f"https://{MEDIA_HOST}/upload/multipart",
                    content=body,
                    headers={"Content-Type": content_type},
                ).status_code

        return call_in_netns(self.ns, post, timeout=90)


@dataclass
class Trust:
    central: str
    config: Path  # the central box's
    key: Path
    published: Path  # what `banks publish` writes
    served: Path  # what the web server serves
    gateways: list[Gateway]
    pki: UpstreamPki

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query to the trust's Prometheus (in the central namespace)."""

        def ask() -> dict[str, Any]:
            reply = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=30)
            return dict(reply.json())

        body = call_in_netns(self.central, ask, timeout=40)
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return list(body["data"]["result"])

    def central_schoolgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "schoolgate"), *args, "--config", str(self.config)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done

    def publish(self, *banks: str, drop: tuple[str, ...] = ()) -> None:
        self.central_schoolgate(
            "banks",
            "publish",
            *(banks or (BANK,)),
            *(arg for bank in drop for arg in ("--drop", bank)),
            "--key",
            str(self.key),
            "--out",
            str(self.published),
            "--publisher",
            "Test Trust",
            "--channel",
            "trust",
        )
        self.serve(self.published)

    def serve(self, folder: Path) -> None:
        """The web server's folder becomes a copy of `folder` (a mirror, or an attacker's)."""
        shutil.rmtree(self.served, ignore_errors=True)
        shutil.copytree(folder, self.served)

    def blocked_everywhere(self, data: bytes) -> list[int]:
        return [gateway.upload(data, self.pki) for gateway in self.gateways]


def _topology(tag: str) -> tuple[str, list[str]]:
    central = f"sg-{tag}-central"
    _ip("netns", "add", central)
    _ip("-n", central, "link", "set", "lo", "up")
    _ip("-n", central, "link", "add", "br0", "type", "bridge")
    _ip("-n", central, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
    _ip("-n", central, "link", "set", "br0", "up")
    gateways = []
    for n, address in enumerate(GATEWAYS, start=1):
        ns, link = f"sg-{tag}-gw{n}", f"sg{tag}g{n}"
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip(
            "-n",
            ns,
            "link",
            "add",
            link,
            "type",
            "veth",
            "peer",
            "name",
            f"sg{tag}c{n}",
            "netns",
            central,
        )
        _ip("-n", central, "link", "set", f"sg{tag}c{n}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
        _ip("-n", ns, "link", "set", link, "up")
        gateways.append(ns)
    return central, gateways


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trust]:
    reason = probe_netns()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    work = tmp_path_factory.mktemp("trust")
    tag = secrets.token_hex(3)
    namespaces: list[str] = []
    with contextlib.ExitStack() as cleanup:
        central, links = _topology(tag)
        namespaces += [central, *links]

        def destroy() -> None:
            for ns in namespaces:
                shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
                _ip("netns", "del", ns, check=False)

        cleanup.callback(destroy)
        names = [f"gw{n}.trust.test" for n in range(1, 4)]
        pki = make_upstream_pki(work / "pki", extra_hosts=[BANKS_HOST, *names])
        Path(f"/etc/netns/{central}").mkdir(parents=True, exist_ok=True)
        Path(f"/etc/netns/{central}/hosts").write_text(
            "127.0.0.1 localhost\n"
            + "".join(f"{a} {n}\n" for a, n in zip(GATEWAYS, names, strict=True))
        )
        password = work / "metrics.password"
        password.write_text("trust-scrape-secret\n")
        upstream = start_upstream_in(central, pki)
        cleanup.callback(upstream.stop)
        served = work / "www"
        served.mkdir()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_pem, pki.key_pem)
        handler = functools.partial(_Files, directory=str(served))
        server = call_in_netns(central, lambda: _FileServer((SERVER_IP, 8443), handler))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
        cleanup.callback(server.server_close)
        cleanup.callback(server.shutdown)

        central_config = work / "central.yaml"
        central_config.write_text(
            f"classifier:\n  models: []\nbanks:\n  path: {work / 'central.sqlite'}\n"
        )
        with BankStore(work / "central.sqlite") as central_banks:  # each test may run alone
            central_banks.ensure_bank(BANK)
        made = subprocess.run(
            [str(VENV_BIN / "schoolgate"), "banks", "keygen", str(work / "keys")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        public_key = made.stdout.split("public_key: ")[1].strip()

        gateways = []
        for n, ns in enumerate(links, start=1):
            Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)
            Path(f"/etc/netns/{ns}/hosts").write_text(
                f"127.0.0.1 localhost\n{SERVER_IP} {MEDIA_HOST} {OTHER_HOST} {BANKS_HOST}\n"
            )
            directory = work / f"gw{n}"
            data_dir = directory / "data"
            data_dir.mkdir(parents=True)
            subscription = {
                "name": "trust",
                "url": f"https://{BANKS_HOST}:8443/",
                "channel": "trust",
                "public_key": public_key,
                "ca_file": str(pki.ca_pem),
                "interval_s": 3600,
            }
            metrics = {
                "listen_host": GATEWAYS[n - 1],
                "listen_port": 9861,
                "basic_auth": {"password_file": str(password)},
                "tls": {"cert_file": str(pki.cert_pem), "key_file": str(pki.key_pem)},
            }
            config = write_config(
                directory,
                PROXY_PORT,
                pki,
                extra={
                    "banks": {"reload_interval_s": 0.2, "subscriptions": [subscription]},
                    "metrics": metrics,
                },
            )
            proxy = start_proxy_in(ns, config, data_dir, directory)
            cleanup.callback(proxy.stop)
            gateways.append(Gateway(ns, config, data_dir, proxy))
        prometheus = _start_prometheus(central, work, pki, password, names)
        cleanup.callback(prometheus.wait, 20)
        cleanup.callback(prometheus.terminate)
        yield Trust(
            central,
            central_config,
            work / "keys" / "publisher.key",
            work / "published",
            served,
            gateways,
            pki,
        )


def _start_prometheus(
    central: str, work: Path, pki: UpstreamPki, password: Path, names: list[str]
) -> subprocess.Popen[bytes]:
    """The trust's Prometheus: every gateway over TLS with basic auth, a `school` per target."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: `make test` installs it (Debian package prometheus)")
    job = {
        "job_name": "schoolgate",
        "scheme": "https",
        "tls_config": {"ca_file": str(pki.ca_pem)},
        "basic_auth": {"username": "prometheus", "password_file": str(password)},
        "static_configs": [
            {"targets": [f"{name}:9861"], "labels": {"school": school}}
            for name, school in zip(names, SCHOOLS, strict=True)
        ],
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [job],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        netns_exec(
            central,
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address={SERVER_IP}:9090",
                "--log.level=warn",
            ],
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process


def _until_all(trust: Trust, data: bytes, status: int) -> None:
    wait_until(
        lambda: trust.blocked_everywhere(data) == [status] * 3,
        15,
        f"every gateway answering {status}",
    )


def test_a_hash_published_centrally_blocks_the_upload_on_every_gateway(
    trust: Trust, benign_photos: dict[str, Image.Image], tmp_path: Path
) -> None:
    picture = encode(benign_photos["coffee"], "JPEG", quality=90)
    assert trust.blocked_everywhere(picture) == [200, 200, 200]
    path = tmp_path / "incident.jpg"
    path.write_bytes(picture)
    trust.central_schoolgate("hashes", "add", str(path), "--bank", BANK)
    trust.publish()
    assert trust.blocked_everywhere(picture) == [200, 200, 200]  # not before their poll
    for gateway in trust.gateways:
        assert "trust: updated" in gateway.sync()
    _until_all(trust, picture, 403)
    for gateway in trust.gateways:
        record = [r for r in gateway.proxy.audit_records() if r["decision"] == "block"][-1]
        first = record["matches"][0]
        assert first["bank"] == BANK
        assert first["provenance"].startswith("Test Trust, ")  # where the bank came from


def test_bad_bundles_are_refused_and_counted_and_blocking_goes_on(
    trust: Trust, benign_photos: dict[str, Image.Image], tmp_path: Path
) -> None:
    picture = encode(benign_photos["chelsea"], "JPEG", quality=90)
    path = tmp_path / "second.jpg"
    path.write_bytes(picture)
    trust.central_schoolgate("hashes", "add", str(path), "--bank", SECOND)
    trust.publish(BANK, SECOND)
    for gateway in trust.gateways:
        gateway.sync()
    _until_all(trust, picture, 403)
    good = tmp_path / "good"
    shutil.copytree(trust.published, good)
    # The trust then stops publishing that bank: a bundle that would unblock the picture.
    trust.publish(BANK, drop=(SECOND,))
    newer = tmp_path / "newer"
    shutil.copytree(trust.published, newer)
    tampered = tmp_path / "tampered"
    shutil.copytree(newer, tampered)
    for bundle in tampered.glob("*-*.sgb"):
        data = bytearray(bundle.read_bytes())
        data[-20] ^= 0x40
        bundle.write_bytes(bytes(data))
    other_key = tmp_path / "other-key"
    subprocess.run(
        [str(VENV_BIN / "schoolgate"), "banks", "keygen", str(other_key)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    foreign = tmp_path / "foreign"
    trust.central_schoolgate(
        "banks",
        "publish",
        BANK,
        "--key",
        str(other_key / "publisher.key"),
        "--out",
        str(foreign),
        "--channel",
        "trust",
    )
    gw1 = trust.gateways[0]
    for attack, folder, reason in (
        ("tampered", tampered, "mismatch"),
        ("another key", foreign, "signature"),
    ):
        trust.serve(folder)
        before = gw1.state()["refusals"].get(reason, 0)
        assert "refused" in gw1.sync(), attack
        assert gw1.state()["refusals"].get(reason, 0) == before + 1, attack
        assert gw1.upload(picture, trust.pki) == 403, attack
    # a gateway that has the newer version is served the older one again
    trust.serve(newer)
    assert "updated" in trust.gateways[1].sync()
    _gateway_allows(trust, trust.gateways[1], picture)
    trust.serve(good)
    assert "refused" in trust.gateways[1].sync()
    assert trust.gateways[1].state()["refusals"] == {"replayed": 1}
    assert trust.gateways[1].upload(picture, trust.pki) == 200  # still the newer banks


def _gateway_allows(trust: Trust, gateway: Gateway, data: bytes) -> None:
    wait_until(lambda: gateway.upload(data, trust.pki) == 200, 15, "the removal applied")


def test_a_gateway_taken_offline_catches_up_when_it_is_back(
    trust: Trust, benign_photos: dict[str, Image.Image], tmp_path: Path
) -> None:
    trust.publish()  # the current banks, served (an earlier test may have served others)
    for gateway in trust.gateways:
        gateway.sync()
    gw3 = trust.gateways[2]
    # The trust's web server is out of its reach (the school's uplink to the trust is down)
    for command in (
        "add table inet offline",
        "add chain inet offline out { type filter hook output priority 0; }",
        "add rule inet offline out tcp dport 8443 reject with tcp reset",
    ):
        run_in(gw3.ns, ["nft", command])
    try:
        picture = encode(benign_photos["rocket"], "JPEG", quality=90)
        path = tmp_path / "third.jpg"
        path.write_bytes(picture)
        trust.central_schoolgate("hashes", "add", str(path), "--bank", BANK)
        trust.publish()
        trust.publish()  # two publications while it is away
        assert "unreachable" in gw3.sync()
        assert gw3.upload(picture, trust.pki) == 200
    finally:
        run_in(gw3.ns, ["nft", "delete", "table", "inet", "offline"])
    assert "trust: updated" in gw3.sync()
    wait_until(lambda: gw3.upload(picture, trust.pki) == 403, 15, "the catch-up applied")


def test_the_trusts_prometheus_sees_every_school_and_its_dashboard_has_data_per_school(
    trust: Trust,
) -> None:
    """The trust's Prometheus scrapes the three gateways over TLS with basic auth; every query
    of the trust dashboard returns one series per school, and the alert rules evaluate cleanly
    on the live series (the trust's own rules included)."""
    trust.publish()  # every gateway has applied a version (each test may run alone)
    for gateway in trust.gateways:
        gateway.sync()
    for gateway in trust.gateways:  # a pass-through connection, for the pass-through share
        context = client_ssl_context(trust.pki.ca_pem)

        def passed(context: ssl.SSLContext = context) -> int:
            with httpx.Client(
                proxy=f"http://127.0.0.1:{PROXY_PORT}", verify=context, timeout=30
            ) as client:
                return client.get(f"https://{OTHER_HOST}/").status_code

        call_in_netns(gateway.ns, passed, timeout=60)
    everyone = set(SCHOOLS)

    def schools(expr: str) -> set[str]:
        return {r["metric"].get("school", "") for r in trust.query(expr)}

    wait_until(lambda: schools('up{job="schoolgate"} == 1') == everyone, 60, "every gateway up")
    wait_until(
        lambda: schools("schoolgate_bank_subscription_version") == everyone,
        60,
        "every gateway's subscription scraped",
    )
    variables = {"school": ".*", "__rate_interval": "15s", "__range": "10m", "__interval": "5s"}
    found = queries({TRUST_DASHBOARD})
    assert len(found) >= 8

    def missing() -> dict[str, set[str]]:
        gaps = {str(q): everyone - schools(substitute(q.expr, variables)) for q in found}
        return {q: s for q, s in gaps.items() if s}

    # a rate or an increase needs two scrapes of a gateway, not only the first
    deadline = time.monotonic() + 60
    while missing() and time.monotonic() < deadline:
        time.sleep(1)
    assert missing() == {}, "queries without a school's data"
    names = set(re.findall(r"\bschoolgate_bank_subscription_[a-z_]+", RULES.read_text()))
    assert names
    assert all(trust.query(f'count({{__name__="{name}"}})') for name in names)

    def evaluated() -> list[dict[str, Any]]:
        def ask() -> dict[str, Any]:
            return dict(httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=10).json())

        groups = call_in_netns(trust.central, ask, timeout=20)
        return [rule for group in groups["data"]["groups"] for rule in group["rules"]]

    wait_until(
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in evaluated()),
        30,
        "every rule evaluated",
    )
    assert [(r["name"], r.get("lastError")) for r in evaluated() if r["health"] != "ok"] == []
