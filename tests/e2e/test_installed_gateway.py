"""deploy/install.sh on a booted Debian 13 with systemd as PID 1, checked for real.

pupil ns (192.0.2.2, on the host) ──veth──▶ container: stu0 192.0.2.1 (the student interface),
    schoolgate.service (transparent proxy) + schoolgate-nft.service (table inet schoolgate)
container: up0 198.51.100.1 ──veth──▶ upstream ns (198.51.100.2, on the host): the recording
    HTTPS server playing discord.com

The container boots a cached debootstrap of trixie (tests/support/booted_debian.py) with a private
network, gets a copy of this checkout and the locked wheelhouse, and runs `deploy/install.sh
--wheelhouse` exactly as the install guide says. Every check asks systemd, nftables or the
upstream, not the installer's own output. The tests share one container and run in file order
(uninstall last).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import booted_debian
from tests.support.imagery import encode, skimage_photo
from tests.support.netns import (
    CLIENT_IP,
    GATEWAY_CLIENT_IP,
    GATEWAY_SERVER_IP,
    SERVER_IP,
    Topology,
    _ip,
    run_in,
)
from tests.support.proxy_harness import REPO_ROOT, NsUpstream, make_upstream_pki, start_upstream_in

pytestmark = [pytest.mark.slow, pytest.mark.system]

APP_HOST = "discord.com"  # a catalogued app in the shipped catalog: uploads are inspected
UPLOAD_PATH = "/api/v10/channels/1234/messages"
BANK = "incident-test"
SG = "/opt/schoolgate/venv/bin/schoolgate"
CONFIG = "/etc/schoolgate/schoolgate.yaml"
RELOADED = "configuration reloaded from"
REFUSED = "configuration reload refused, still serving the previous one"
# These directories change whatever is installed (journal, apt, systemd's own state) or are the
# test's inputs; everything else must be as it was after --uninstall --purge.
VOLATILE = (
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log/journal", "/var/cache",
    "/var/lib/systemd", "/var/lib/dbus", "/root/schoolgate", "/root/wheelhouse", "/root/inputs",
    "/etc/machine-id", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/etc/.pwd.lock",
)  # fmt: skip
SNAPSHOT = (
    "find / -xdev \\( "
    + " -o ".join(f"-path {p}" for p in VOLATILE)
    + " \\) -prune -o -printf '%y %m %u %g %p\\n' | sort"
)


def normalise(name: str) -> str:
    """A package name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Gateway:
    container: booted_debian.Container
    topology: Topology  # client = the pupil, server = the upstream; gateway unused (container)
    upstream: NsUpstream
    ca_pem: Path  # the school's interception CA, as a device would have it installed
    banked: bytes
    benign: bytes
    before_install: str  # file-system snapshot (SNAPSHOT) before install.sh ran
    install_output: str

    def schoolgate(self, *args: str, check: bool = True) -> str:
        """The installed schoolgate, as its service user, on the installed configuration."""
        return self.container.run(
            ["runuser", "-u", "schoolgate", "--", "env", f"SCHOOLGATE_CONFIG={CONFIG}", SG, *args],
            timeout=120,
            check=check,
        ).stdout

    def upload(self, data: bytes, name: str) -> tuple[int, str]:
        """curl from the pupil's namespace, multipart as Discord's web client sends a file."""
        workdir = self.ca_pem.parent
        (workdir / name).write_bytes(data)
        result = run_in(
            self.topology.client,
            ["curl", "-sS", "--max-time", "30", "--cacert", str(self.ca_pem),
             "--resolve", f"{APP_HOST}:443:{SERVER_IP}",
             "-F", "payload_json={\"content\":\"hi\"}", "-F", f"files[0]=@{workdir / name}",
             "-o", str(workdir / "reply"), "-w", "%{http_code}",
             f"https://{APP_HOST}{UPLOAD_PATH}"],
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"curl failed: {result.stderr}"
        return int(result.stdout), (workdir / "reply").read_text(errors="replace")

    def active(self, unit: str) -> bool:
        return self.container.show(unit, "ActiveState")["ActiveState"] == "active"

    def nft_table(self) -> bool:
        out = self.container.run(["nft", "list", "tables"], check=False).stdout
        return "table inet schoolgate" in out.splitlines()

    def reload_and_wait(self, outcome: str) -> None:
        """`systemctl reload` (SIGHUP), then wait for the proxy to log `outcome` once more."""
        journal = "journalctl -u schoolgate --no-pager -o cat"

        def seen() -> int:
            return self.container.sh(journal).count(outcome)

        before = seen()
        self.container.run(["systemctl", "reload", "schoolgate"], timeout=120)
        self.container.wait_for(f"{outcome!r} in the journal", lambda: seen() > before, timeout=90)

    def set_config(self, edit: str) -> None:
        """Edit the installed YAML with a Python statement on `config` (a dict)."""
        self.container.run(
            ["/opt/schoolgate/venv/bin/python", "-c",
             "import yaml, sys\n"
             f"path = {CONFIG!r}\n"
             "config = yaml.safe_load(open(path))\n"
             f"{edit}\n"
             "open(path, 'w').write(yaml.safe_dump(config, sort_keys=False))\n"],
        )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    reason = booted_debian.why_cannot_boot()
    if reason is not None:
        pytest.skip(reason)
    base = booted_debian.rootfs()
    wheels = booted_debian.wheelhouse(REPO_ROOT, booted_debian.container_python_version(base))
    work = tmp_path_factory.mktemp("booted")
    root = work / "root"
    # A private copy to boot: the cached root stays pristine for the next run.
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True, timeout=600)
    booted_debian.copy_checkout(REPO_ROOT, root / "root/schoolgate")
    shutil.copytree(wheels, root / "root/wheelhouse")
    # Benign sample photos (scikit-image); the "banked" one stands in for an incident's image.
    banked, benign = encode(skimage_photo("astronaut")), encode(skimage_photo("coffee"))
    (root / "root/inputs").mkdir()
    (root / "root/inputs/banked.jpg").write_bytes(banked)
    pki = make_upstream_pki(work / "pki", extra_hosts=[APP_HOST])
    shutil.copy(pki.ca_pem, root / "root/inputs/upstream-ca.pem")

    tag = secrets.token_hex(3)
    topology = Topology(
        tag, client=f"sg-{tag}-pupil", gateway="", server=f"sg-{tag}-up", gw_client_if="stu0"
    )
    pupil_link, upstream_link = f"sg{tag}pu", f"sg{tag}up"
    container = None
    upstream = None
    try:
        for ns in (topology.client, topology.server):
            _ip("netns", "add", ns)
            topology.created.append(ns)
        container = booted_debian.boot(
            root, f"sg-{tag}", [(pupil_link, "stu0"), (upstream_link, "up0")], work / "console.log"
        )
        booted_debian.move_link(pupil_link, topology.client, f"{CLIENT_IP}/24", GATEWAY_CLIENT_IP)
        booted_debian.move_link(
            upstream_link, topology.server, f"{SERVER_IP}/24", GATEWAY_SERVER_IP
        )
        container.sh(
            f"ip addr add {GATEWAY_CLIENT_IP}/24 dev stu0 && ip link set stu0 up && "
            f"ip addr add {GATEWAY_SERVER_IP}/24 dev up0 && ip link set up0 up"
        )
        upstream = start_upstream_in(topology.server, pki)

        before = container.sh(SNAPSHOT)
        installed = container.run(
            ["/root/schoolgate/deploy/install.sh", "--student-interface", "stu0",
             "--wheelhouse", "/root/wheelhouse"],
            timeout=900, check=False,
        )  # fmt: skip
        assert installed.returncode == 0, (
            f"install.sh failed ({installed.returncode}):\n{installed.stdout[-3000:]}\n"
            f"{installed.stderr[-5000:]}\njournal:\n"
            + container.sh("journalctl -u schoolgate --no-pager | tail -40", check=False)
        )
        # The test's upstream has its own CA: trust it for upstream connections (as a school
        # would for an internal service), and bank the photo as the DSL would.
        container.sh(
            "install -m 0644 /root/inputs/upstream-ca.pem /etc/schoolgate/upstream-ca.pem && "
            "install -m 0644 /root/inputs/banked.jpg /var/tmp/banked.jpg"
        )
        gateway = Gateway(
            container, topology, upstream, work / "client" / "school-ca.pem", banked, benign,
            before, installed.stdout,
        )  # fmt: skip
        gateway.set_config(
            "config['proxy']['upstream_ca_file'] = '/etc/schoolgate/upstream-ca.pem'"
        )
        gateway.schoolgate("hashes", "add", "/var/tmp/banked.jpg", "--bank", BANK)
        container.run(["systemctl", "restart", "schoolgate"], timeout=240)
        gateway.ca_pem.parent.mkdir()
        gateway.ca_pem.write_text(gateway.schoolgate("ca", "export", "--format", "pem"))
        yield gateway
    finally:
        if upstream is not None:
            upstream.stop()
        if container is not None:
            container.stop()
        topology.destroy()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The service under systemd


def test_service_is_active_after_readiness_notification(gateway: Gateway) -> None:
    props = gateway.container.show(
        "schoolgate", "Type", "ActiveState", "SubState", "MainPID", "StatusText", "NotifyAccess"
    )
    assert props["Type"] == "notify"
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert int(props["MainPID"]) > 0
    # A Type=notify unit only reaches active after READY=1 from its main process.
    main = gateway.container.sh(f"cat /proc/{props['MainPID']}/cmdline | tr '\\0' ' '")
    assert f"{SG} run --config {CONFIG}" in main
    listening = gateway.container.sh("ss -Hltn 'sport = :8080'")
    assert listening.strip(), "the proxy does not listen on 8080"
    assert "installed" in gateway.install_output


def test_installed_packages_are_exactly_the_lock(gateway: Gateway) -> None:
    frozen = gateway.container.run(
        ["/opt/schoolgate/venv/bin/python", "-m", "pip", "freeze", "--all"]
    ).stdout
    installed = {
        normalise(line.split("==")[0]): line.split("==")[1]
        for line in frozen.splitlines()
        if "==" in line
    }
    locked: dict[str, str] = {}
    for name in ("build.txt", "runtime.txt"):
        for line in (REPO_ROOT / "requirements" / name).read_text().splitlines():
            if line and not line.startswith((" ", "#")) and "==" in line:
                package, version = line.split(";")[0].strip().split("==")
                locked[package.lower().replace("_", "-")] = version
    installed.pop("schoolgate", None)
    assert installed == locked


def test_banked_upload_is_blocked_and_its_alert_is_in_the_outbox(gateway: Gateway) -> None:
    gateway.upstream.upstream.clear()
    status, _ = gateway.upload(gateway.benign, "holiday.jpg")
    assert status == 200, "a benign upload must reach the app"
    assert len(gateway.upstream.upstream.requests(UPLOAD_PATH)) == 1

    gateway.upstream.upstream.clear()
    status, page = gateway.upload(gateway.banked, "banked.jpg")
    assert status == 403, page
    assert gateway.upstream.upstream.requests(UPLOAD_PATH) == [], "the upstream got the upload"
    digest = hashlib.sha256(gateway.banked).hexdigest()
    alerts = [
        json.loads(line) for line in gateway.schoolgate("alerts", "list", "--json").splitlines()
    ]
    assert any(digest in json.dumps(alert) for alert in alerts), alerts


# Run inside the container by the venv's Python: sign in to the console as a DSL and list the
# incidents (cookies and the sign-in form's token as a browser handles them).
CONSOLE_CLIENT = r"""
import http.cookiejar, re, ssl, sys, urllib.parse, urllib.request
context = ssl.create_default_context(cafile="/var/lib/schoolgate/console-tls/console.crt")
context.check_hostname = False  # made for the host's name; the test reaches it as 127.0.0.1
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                     urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
base = "https://127.0.0.1:8443"
page = opener.open(base + "/login").read().decode()
token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
form = urllib.parse.urlencode({"username": "dana", "password": sys.argv[1], "csrf": token})
print(opener.open(base + "/login", form.encode()).read().decode())
"""


def test_the_console_serves_the_incident_to_a_signed_in_dsl(gateway: Gateway) -> None:
    props = gateway.container.show("schoolgate-console", "ActiveState", "SubState")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    password = secrets.token_urlsafe(16)
    gateway.container.run(
        ["runuser", "-u", "schoolgate", "--", "env", f"SCHOOLGATE_CONFIG={CONFIG}", SG,
         "console", "user", "add", "dana", "--role", "dsl", "--password-stdin"],
        input=password + "\n",
    )  # fmt: skip
    page = gateway.container.run(
        ["/opt/schoolgate/venv/bin/python", "-c", CONSOLE_CLIENT, password], timeout=60
    ).stdout
    digest = hashlib.sha256(gateway.banked).hexdigest()
    assert "Incidents" in page
    assert "bank incident-test" in page, page[-2000:]
    assert digest not in page  # the list shows what matched; the hash is on the incident page


def test_firewall_unit_loads_the_table_and_removes_it_when_stopped(gateway: Gateway) -> None:
    assert gateway.active("schoolgate-nft")
    assert gateway.nft_table()
    ruleset = gateway.container.run(["nft", "list", "table", "inet", "schoolgate"]).stdout
    assert '"stu0"' in ruleset, ruleset
    assert "redirect to :8080" in ruleset, ruleset
    gateway.container.run(["systemctl", "stop", "schoolgate-nft"])
    assert not gateway.nft_table()
    # Fails closed: without the table pupils' traffic is not redirected, so put it back.
    gateway.container.run(["systemctl", "start", "schoolgate-nft"])
    assert gateway.nft_table()


def test_watchdog_is_armed_and_fed(gateway: Gateway) -> None:
    shipped = gateway.container.show("schoolgate", "WatchdogUSec")["WatchdogUSec"]
    assert shipped == "1min", shipped
    # Shorten the watchdog (a drop-in, as an administrator would) so the test need not wait
    # minutes: the proxy must ping at the interval systemd hands it, or be killed.
    container = gateway.container
    container.sh(
        "mkdir -p /run/systemd/system/schoolgate.service.d && printf '[Service]\\n"
        "WatchdogSec=4s\\nTimeoutAbortSec=5s\\n' >/run/systemd/system/schoolgate.service.d/wd.conf"
        " && systemctl daemon-reload && systemctl restart schoolgate"
    )
    try:
        props = container.show("schoolgate", "MainPID", "NRestarts", "WatchdogUSec")
        assert props["WatchdogUSec"] == "4s"
        pid, restarts = props["MainPID"], int(props["NRestarts"])
        container.sh("sleep 12")  # three watchdog periods: alive only if it pinged throughout
        assert container.show("schoolgate", "MainPID")["MainPID"] == pid
        assert gateway.active("schoolgate")
        # A wedged process (stopped: no more pings) is aborted by the watchdog and restarted.
        container.run(["kill", "-STOP", pid])
        container.wait_for(
            "the watchdog to restart a wedged proxy",
            lambda: (
                int(container.show("schoolgate", "NRestarts")["NRestarts"]) > restarts
                and gateway.active("schoolgate")
            ),
            timeout=60,
        )
        journal = container.sh("journalctl -u schoolgate --no-pager | tail -50")
        assert "Watchdog timeout" in journal, journal
    finally:
        container.sh(
            "rm -rf /run/systemd/system/schoolgate.service.d && systemctl daemon-reload && "
            "systemctl restart schoolgate"
        )


def test_killed_process_is_restarted(gateway: Gateway) -> None:
    container = gateway.container
    props = container.show("schoolgate", "MainPID", "NRestarts")
    container.run(["kill", "-KILL", props["MainPID"]])
    container.wait_for(
        "systemd to restart the killed proxy",
        lambda: (
            int(container.show("schoolgate", "NRestarts")["NRestarts"]) > int(props["NRestarts"])
            and gateway.active("schoolgate")
        ),
        timeout=90,
    )
    assert container.show("schoolgate", "MainPID")["MainPID"] != props["MainPID"]
    status, _ = gateway.upload(gateway.banked, "again.jpg")
    assert status == 403


def test_reload_applies_a_changed_config_and_keeps_the_old_one_when_broken(
    gateway: Gateway,
) -> None:
    container = gateway.container
    pid = container.show("schoolgate", "MainPID")["MainPID"]
    students = "next(g for g in config['policy']['groups'] if g['name'] == 'students')"
    gateway.set_config(f"{students}['mode'] = 'monitor'")
    gateway.reload_and_wait(RELOADED)
    gateway.upstream.upstream.clear()
    status, _ = gateway.upload(gateway.banked, "monitored.jpg")
    assert status == 200, "monitor mode (after reload) lets the upload through"
    assert gateway.upstream.upstream.requests(UPLOAD_PATH)

    container.sh(f"cp {CONFIG} /root/inputs/good.yaml && echo 'policy: [broken' >>{CONFIG}")
    gateway.reload_and_wait(REFUSED)
    assert gateway.active("schoolgate")
    assert container.show("schoolgate", "MainPID")["MainPID"] == pid, "reload must not restart"
    gateway.upstream.upstream.clear()
    status, _ = gateway.upload(gateway.banked, "still-monitored.jpg")
    assert status == 200, "the broken file must leave the running (monitor) config in place"
    journal = container.sh("journalctl -u schoolgate --no-pager -o cat | tail -30")
    assert f"{REFUSED}: {CONFIG}" in journal, journal

    container.sh(f"cp /root/inputs/good.yaml {CONFIG}")
    gateway.set_config(f"{students}['mode'] = 'block'")
    gateway.reload_and_wait(RELOADED)
    status, _ = gateway.upload(gateway.banked, "blocked-again.jpg")
    assert status == 403
    assert container.show("schoolgate", "MainPID")["MainPID"] == pid


def test_the_fast_path_unit_reads_the_queue_from_its_sandbox(gateway: Gateway) -> None:
    """Switched on, schoolgate-fastpath (CAP_NET_ADMIN only, nothing to write but its runtime
    directory) puts its queue rule in place through iptables-nft, binds the kernel's queue and
    keeps the heartbeat; stopped, it ends the fast path and takes the rule away."""
    container = gateway.container
    rule = "iptables-nft -t mangle -S FORWARD"
    heartbeat = "nft list set inet schoolgate fast_ready"
    gateway.set_config("config.setdefault('gateway', {})['fast_path'] = True")
    try:
        container.run(["systemctl", "restart", "schoolgate-nft", "schoolgate-fastpath",
                       "schoolgate-resolver"], timeout=120)  # fmt: skip
        # The resolver's first pass over the catalogued names (no upstream here: each gives
        # up after a few seconds) comes before the heartbeat, and the rule with it.
        container.wait_for(
            "the fast path's heartbeat and queue rule",
            lambda: (
                "first flight" in container.sh(rule, check=False)
                and "timeout" in container.sh(heartbeat, check=False)
            ),
            timeout=90,
        )
        assert gateway.active("schoolgate-fastpath")
        journal = container.sh("journalctl -u schoolgate-fastpath --no-pager -o cat")
        assert "fastpath listening" in journal, journal
        assert "cannot" not in journal, journal
        assert "failed" not in journal, journal
        container.run(["systemctl", "stop", "schoolgate-fastpath"], timeout=60)
        assert "first flight" not in container.sh(rule, check=False)
        # Its TLS session book, written on the way out, is the proxy's (the schoolgate user's)
        # to read when an address moves to the proxy (adversarial pass a34)
        book = "/var/lib/schoolgate-fastpath/fastpath-tls-sessions.json"
        assert '"version": 1' in container.sh(f"runuser -u schoolgate -- cat {book}")
        # Seen once under a loaded full run: the heartbeat still there right after the stop
        # (cause not found; the service's stop now retries its flush). Wait a little, and say
        # what systemd and the journal knew if it stays.
        try:
            container.wait_for(
                "the heartbeat to end with the service",
                lambda: "elements" not in container.sh(heartbeat, check=False),
                timeout=10,
            )
        except AssertionError:
            raise AssertionError(container.sh(
                "systemctl show -p NRestarts -p ActiveState schoolgate-fastpath; "
                "journalctl -u schoolgate-fastpath --no-pager -o short-precise | tail -20",
                check=False,
            )) from None  # fmt: skip
    finally:
        gateway.set_config("config['gateway']['fast_path'] = False")
        container.run(["systemctl", "restart", "schoolgate-nft", "schoolgate-fastpath",
                       "schoolgate-resolver"], timeout=120, check=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Removal (last: the container is left without schoolgate)


def test_uninstall_then_purge_leave_nothing_behind(gateway: Gateway) -> None:
    container = gateway.container
    result = container.run(["/root/schoolgate/deploy/install.sh", "--uninstall"], timeout=120)
    assert "kept" in result.stdout
    units = container.sh("systemctl list-unit-files 'schoolgate*' --no-legend", check=False)
    assert units.strip() == "", units
    assert not gateway.nft_table()
    assert container.run(["test", "-e", "/opt/schoolgate"], check=False).returncode == 1
    assert container.run(["test", "-e", CONFIG], check=False).returncode == 0, "config is kept"
    assert container.run(["pgrep", "-f", SG], check=False).returncode == 1, "still running"

    container.run(["/root/schoolgate/deploy/install.sh", "--uninstall", "--purge"], timeout=120)
    assert container.run(["getent", "passwd", "schoolgate"], check=False).returncode == 2
    assert container.run(["getent", "group", "schoolgate"], check=False).returncode == 2
    after = container.sh(SNAPSHOT)
    before_lines, after_lines = set(gateway.before_install.splitlines()), set(after.splitlines())
    assert after_lines == before_lines, (
        f"left behind: {sorted(after_lines - before_lines)[:20]}\n"
        f"removed: {sorted(before_lines - after_lines)[:20]}"
    )
