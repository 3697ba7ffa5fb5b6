"""Configuration reload (SIGHUP / systemctl reload) and the systemd notification protocol.

Unit tests drive the notifier against a real datagram socket and the reloader against real
runtimes; the end-to-end test sends SIGHUP to a real `schoolgate run` and watches a real proxied
upload change outcome, then survive a broken file. Benign images only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from schoolgate.addons.reload import ConfigReloader
from schoolgate.addons.runtime import Runtime, RuntimeRef
from schoolgate.config import Config, load_config
from schoolgate.gateway.sdnotify import SystemdNotifier
from schoolgate.pipeline.verdict import InspectionContext, Verdict
from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    ProxyProcess,
    RunningUpstream,
    bank_photo,
    can_isolate_hosts,
    client_ssl_context,
    free_port,
    make_upstream_pki,
    multipart_body,
    start_proxy,
    start_upstream,
    write_config,
)

# ---------------------------------------------------------------------------------------------
# sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    with sock:
        yield sock


def test_notifier_sends_datagrams_to_notify_socket(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.ready("serving")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving"
    assert notifier.reloading()
    fields = notify_socket.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert int(fields[1].split("=")[1]) > 0
    assert notifier.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"schoolgate-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_notifier_outside_systemd_does_nothing_and_never_raises(tmp_path: Path) -> None:
    assert not SystemdNotifier({}).enabled
    assert not SystemdNotifier({}).ready()
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "no-such-socket")})
    assert gone.enabled
    assert not gone.ready()


def test_watchdog_interval_only_for_the_watched_process() -> None:
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(mine).watchdog_s == 4.0
    assert SystemdNotifier({"WATCHDOG_USEC": "4000000"}).watchdog_s == 4.0
    other = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(other).watchdog_s is None
    assert SystemdNotifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


# ---------------------------------------------------------------------------------------------
# Runtime swap and retirement


def small_config(tmp_path: Path, mode: str = "block", name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        yaml.safe_dump(
            {
                "classifier": {"models": []},
                "policy": {"groups": [{"name": "pupils", "subnets": ["0.0.0.0/0"], "mode": mode}]},
            }
        )
    )
    return path


def audit_decisions(config: Config) -> list[str]:
    lines = config.audit.path.read_text().splitlines() if config.audit.path.exists() else []
    return [line for line in lines if '"decision"' in line]


def test_retire_waits_for_in_flight_inspections(
    data_dir: Path, tmp_path: Path, benign_photos: dict[str, Image.Image]
) -> None:
    config = load_config(small_config(tmp_path))
    old, new = Runtime.from_config(config), Runtime.from_config(config)
    ref = RuntimeRef(old)
    release = threading.Event()
    evaluate = old.inspector.evaluate

    def slow_evaluate(data: bytes, ctx: InspectionContext) -> Verdict:
        release.wait(20)
        return evaluate(data, ctx)

    old.inspector.evaluate = slow_evaluate  # type: ignore[method-assign]
    photo = encode(benign_photos["coffee"], "JPEG")

    async def scenario() -> tuple[Verdict, bool, bool]:
        judging = asyncio.create_task(old.judge(photo, InspectionContext(client_ip="192.0.2.9")))
        await asyncio.sleep(0.2)  # the item is in a worker now
        assert ref.swap(new) is old
        retiring = asyncio.create_task(old.retire(timeout_s=20, quiet_s=0.2))
        await asyncio.sleep(0.6)
        closed_while_busy = old.closed
        release.set()
        verdict = await judging
        return verdict, closed_while_busy, await retiring

    try:
        verdict, closed_while_busy, drained = asyncio.run(scenario())
    finally:
        release.set()
        new.close()
    assert not closed_while_busy  # the old runtime stayed open while its item ran
    assert drained
    assert old.closed
    assert verdict.media_type == "jpeg"
    # Judged and recorded by the old runtime before its audit log closed.
    assert any(verdict.id in line for line in audit_decisions(config))
    assert old.counters["allowed"] == 1


def test_retire_gives_up_at_its_deadline(data_dir: Path, tmp_path: Path) -> None:
    runtime = Runtime.from_config(load_config(small_config(tmp_path)))
    runtime.busy = 1  # an inspection that never finishes
    started = time.monotonic()
    assert not asyncio.run(runtime.retire(timeout_s=0.5))
    assert runtime.closed
    assert time.monotonic() - started < 5


def _reloader(ref: RuntimeRef) -> ConfigReloader:
    from mitmproxy import options

    return ConfigReloader(ref, options.Options(), lambda config: {})


def test_reload_swaps_in_a_valid_changed_file(data_dir: Path, tmp_path: Path) -> None:
    path = small_config(tmp_path, "block")
    old = Runtime.from_config(load_config(path))
    ref = RuntimeRef(old)
    small_config(tmp_path, "monitor")

    async def scenario() -> bool:
        reloader = _reloader(ref)
        ok = await reloader.reload()
        await reloader.close()
        return ok

    assert asyncio.run(scenario())
    assert ref.current is not old
    assert ref.get().config.policy.groups[0].mode == "monitor"
    assert old.closed
    # Chunked uploads in progress and learnt upload hosts survive the reload.
    assert ref.get().sessions is old.sessions
    assert ref.get().learnt is old.learnt
    ref.get().close()


def test_reload_refuses_a_broken_file_and_keeps_serving(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_config(tmp_path, "block")
    old = Runtime.from_config(load_config(path))
    ref = RuntimeRef(old)
    path.write_text(path.read_text().replace("mode: block", "mode: sometimes"))

    async def scenario() -> bool:
        reloader = _reloader(ref)
        ok = await reloader.reload()
        await reloader.close()
        return ok

    with caplog.at_level(logging.ERROR, logger="schoolgate.proxy"):
        assert not asyncio.run(scenario())
    assert ref.current is old
    assert not old.closed
    message = caplog.text
    assert "reload refused" in message
    assert f"{path}: policy.groups[0].mode: 'sometimes' is not one of: block, monitor" in message
    old.close()


# ---------------------------------------------------------------------------------------------
# SIGHUP to a real proxy


def _upload(proxy: ProxyProcess, upstream: RunningUpstream, ca: Path, jpeg: bytes) -> int:
    body, content_type = multipart_body("file", "photo.jpg", jpeg, "image/jpeg")
    context = client_ssl_context(proxy.ca_pem, ca)
    with httpx.Client(proxy=proxy.url, verify=context, timeout=60) as client:
        response = client.post(
            f"https://{MEDIA_HOST}:{upstream.upstream.port}/upload/multipart",
            content=body,
            headers={"Content-Type": content_type},
        )
    return response.status_code


def _wait_for(proxy: ProxyProcess, text: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.log().count(text) >= count:
            return
        if proxy.process.poll() is not None:
            raise AssertionError(f"proxy exited:\n{proxy.log()}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear {count}x within {timeout} s:\n{proxy.log()}")


def _messages(sock: socket.socket) -> list[str]:
    """Every notification received so far (non-blocking)."""
    found: list[str] = []
    sock.setblocking(False)
    try:
        for _ in range(10_000):
            found.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not can_isolate_hosts(), reason="needs root and unshare(1) for /etc/hosts")
def test_sighup_reloads_policy_and_survives_a_broken_file(
    tmp_path: Path,
    benign_photos: dict[str, Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    notify_socket: socket.socket,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pki = make_upstream_pki(tmp_path / "pki")
    bank_photo(data_dir, benign_photos["chelsea"])
    banned = encode(benign_photos["chelsea"], "JPEG", quality=80)
    port = free_port()
    groups: list[dict[str, Any]] = [{"name": "pupils", "subnets": ["0.0.0.0/0"], "mode": "block"}]
    config = write_config(tmp_path, port, pki, groups=groups)
    # As systemd would run it: Type=notify with a watchdog.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    upstream = start_upstream(pki)
    try:
        proxy = start_proxy(config, data_dir, port, tmp_path)
        try:
            assert _upload(proxy, upstream, pki.ca_pem, banned) == 403
            assert upstream.upstream.requests("/upload") == []

            site = yaml.safe_load(config.read_text())
            site["policy"]["groups"][0]["mode"] = "monitor"
            config.write_text(yaml.safe_dump(site))
            proxy.process.send_signal(signal.SIGHUP)
            _wait_for(proxy, "configuration reloaded from", 1)
            assert _upload(proxy, upstream, pki.ca_pem, banned) == 200
            assert len(upstream.upstream.requests("/upload")) == 1
            assert proxy.audit_records()[-1]["decision"] == "allow"

            # Broken: it would switch back to block, but also carries a bad key. Nothing of it
            # may apply.
            site["policy"]["groups"][0]["mode"] = "block"
            site["policy"]["groups"][0]["subnets"] = ["10.0.0/33"]
            config.write_text(yaml.safe_dump(site))
            proxy.process.send_signal(signal.SIGHUP)
            _wait_for(proxy, "reload refused", 1)
            assert (
                f"{config}: policy.groups[0].subnets[0]: '10.0.0/33' is not an IP address"
                in proxy.log()
            )
            assert _upload(proxy, upstream, pki.ca_pem, banned) == 200
            assert len(upstream.upstream.requests("/upload")) == 2
            assert proxy.process.poll() is None
        finally:
            proxy.stop()
    finally:
        upstream.stop()
    messages = _messages(notify_socket)
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in messages
    reloads = [m for m in messages if m.startswith("RELOADING=1")]
    assert len(reloads) == 2
    after_reload = messages[messages.index(reloads[-1]) + 1 :]
    assert any(m.startswith("READY=1") for m in after_reload)  # told systemd it is ready again
    assert messages[-1] == "STOPPING=1"
