"""A trust of three schools (issue 21), each gateway in its own network namespace with its own
`schoolgate run`, and the trust's central box in another: `schoolgate banks publish` there, served
over HTTPS by a static web server, and `schoolgate banks sync` on each gateway (the test triggers
the poll). TEST-NET addresses only.

central ns (198.51.100.2: the banks' web server on :8443, a catalogued upload host on :443)
  ├── gw1 ns (198.51.100.11)   each: `schoolgate run` on 127.0.0.1:8080, its own banks, and a
  ├── gw2 ns (198.51.100.12)   client that uploads through it; /etc/netns/<ns>/hosts names the
  └── gw3 ns (198.51.100.13)   central box (ip netns exec mounts it over /etc/hosts)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import encode
from tests.e2e.test_proxy_transparent import NsProxy, start_proxy_in
from tests.support.netns import SERVER_IP, _ip, call_in_netns, netns_exec, probe_netns, run_in
from tests.support.proxy_harness import (
    MEDIA_HOST,
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

BANKS_HOST = "banks.trust.test"
BANK = "trust-incidents"
SECOND = "trust-second"
PROXY_PORT = 8080
GATEWAYS = ("198.51.100.11", "198.51.100.12", "198.51.100.13")


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
        argv = netns_exec(self.ns, [str(VENV_BIN / "schoolgate"), *args, "--config",
                                    str(self.config)])  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              check=False)  # fmt: skip

    def sync(self) -> str:
        return self.schoolgate("banks", "sync").stdout

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.schoolgate("banks", "subscriptions", "--json").stdout))

    def upload(self, data: bytes, pki: UpstreamPki) -> int:
        trust = client_ssl_context(self.proxy.ca_pem, pki.ca_pem)
        body, content_type = multipart_body("file", "photo.jpg", data, "image/jpeg")

        def post() -> int:
            with httpx.Client(proxy=f"http://127.0.0.1:{PROXY_PORT}", verify=trust,
                              timeout=60) as client:  # fmt: skip
                return client.post(f"https://{MEDIA_HOST}/upload/multipart", content=body,
                                   headers={"Content-Type": content_type}).status_code  # fmt: skip

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

    def central_schoolgate(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "schoolgate"), *args, "--config", str(self.config)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done

    def publish(self, *banks: str) -> None:
        self.central_schoolgate("banks", "publish", *(banks or (BANK,)), "--key",
                                str(self.key), "--out", str(self.published), "--publisher",
                                "Test Trust")  # fmt: skip
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
        _ip("-n", ns, "link", "add", link, "type", "veth", "peer", "name", f"sg{tag}c{n}",
            "netns", central)  # fmt: skip
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
        pki = make_upstream_pki(work / "pki", extra_hosts=[BANKS_HOST])
        upstream = start_upstream_in(central, pki)
        cleanup.callback(upstream.stop)
        served = work / "www"
        served.mkdir()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_pem, pki.key_pem)
        handler = functools.partial(_Files, directory=str(served))
        server = call_in_netns(central, lambda: _FileServer((SERVER_IP, 8443), handler))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()  # fmt: skip
        cleanup.callback(server.server_close)
        cleanup.callback(server.shutdown)

        central_config = work / "central.yaml"
        central_config.write_text(f"classifier:\n  models: []\nbanks:\n  path: "
                                  f"{work / 'central.sqlite'}\n")  # fmt: skip
        made = subprocess.run([str(VENV_BIN / "schoolgate"), "banks", "keygen",
                               str(work / "keys")], capture_output=True, text=True, timeout=60,
                              check=True)  # fmt: skip
        public_key = made.stdout.split("public_key: ")[1].strip()

        gateways = []
        for n, ns in enumerate(links, start=1):
            Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)
            Path(f"/etc/netns/{ns}/hosts").write_text(
                f"127.0.0.1 localhost\n{SERVER_IP} {MEDIA_HOST} {BANKS_HOST}\n"
            )
            directory = work / f"gw{n}"
            data_dir = directory / "data"
            data_dir.mkdir(parents=True)
            subscription = {"name": "trust", "url": f"https://{BANKS_HOST}:8443/",
                            "public_key": public_key, "ca_file": str(pki.ca_pem),
                            "interval_s": 3600}  # fmt: skip
            config = write_config(directory, PROXY_PORT, pki,
                                  extra={"banks": {"reload_interval_s": 0.2,
                                                   "subscriptions": [subscription]}})  # fmt: skip
            proxy = start_proxy_in(ns, config, data_dir, directory)
            cleanup.callback(proxy.stop)
            gateways.append(Gateway(ns, config, data_dir, proxy))
        yield Trust(central, central_config, work / "keys" / "publisher.key",
                    work / "published", served, gateways, pki)  # fmt: skip


def _until_all(trust: Trust, data: bytes, status: int) -> None:
    wait_until(lambda: trust.blocked_everywhere(data) == [status] * 3, 15,
               f"every gateway answering {status}")  # fmt: skip


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
        assert BANK in json.dumps(record)


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
    trust.publish(BANK)
    newer = tmp_path / "newer"
    shutil.copytree(trust.published, newer)
    tampered = tmp_path / "tampered"
    shutil.copytree(newer, tampered)
    for bundle in tampered.glob("*-*.sgb"):
        data = bytearray(bundle.read_bytes())
        data[-20] ^= 0x40
        bundle.write_bytes(bytes(data))
    other_key = tmp_path / "other-key"
    subprocess.run([str(VENV_BIN / "schoolgate"), "banks", "keygen", str(other_key)],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    foreign = tmp_path / "foreign"
    trust.central_schoolgate("banks", "publish", BANK, "--key", str(other_key / "publisher.key"),
                             "--out", str(foreign))  # fmt: skip
    gw1 = trust.gateways[0]
    for attack, folder, reason in (("tampered", tampered, "signature"),
                                   ("another key", foreign, "signature")):  # fmt: skip
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
    for command in ("add table inet offline",
                    "add chain inet offline out { type filter hook output priority 0; }",
                    "add rule inet offline out tcp dport 8443 reject with tcp reset"):  # fmt: skip
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
