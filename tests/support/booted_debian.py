"""A booted Debian 13 (trixie) with systemd as PID 1, for testing the installer for real.

The root file system is made once with debootstrap from the mirror this machine's apt already
uses, and cached (`SCHOOLGATE_TEST_CACHE`, default /var/cache/schoolgate-tests); each test run boots
a copy of it with `systemd-nspawn --boot` in a private network namespace, so the container's
nftables table never touches the host's ruleset. Two extra veth pairs join it to namespaces the
test makes on the host (a pupil and an upstream, TEST-NET addresses only). Commands run inside
through nsenter: the container is not registered with machined, because these machines have no
system bus (`--register=no --keep-unit`).

The wheelhouse is the exact locked artifacts for the container's Python (deploy/wheelhouse.sh),
cached beside the root file system under the hash of the lock: the container has no network, so
the installer's `--wheelhouse` path is the only way in, as at a school with no uplink.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.netns import _ip, run_in

SUITE = "trixie"
# What a gateway has before schoolgate: systemd, Python 3.13 with venv and headers, a compiler
# for pdqhash and netfilterqueue (published only as source) with libnetfilter_queue's headers,
# nftables, iptables and the tools the installer calls. The container has no network: what the
# installer would install (deploy/system-deps.sh) must already be there.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "procps", "iproute2", "nftables", "tcpdump", "curl",
    "ca-certificates", "python3", "python3-venv", "python3-dev", "g++", "sqlite3",
    "iptables", "libnetfilter-queue-dev", "libarchive13t64",
)  # fmt: skip
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT_S = 90
# The cgroup hierarchy the container's systemd mounts; on a hybrid host only v2 can be delegated.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def cache_dir() -> Path:
    return Path(os.environ.get("SCHOOLGATE_TEST_CACHE", "/var/cache/schoolgate-tests"))


def why_cannot_boot() -> str | None:
    """None when a container can be booted here, else the reason a test should skip with."""
    if os.geteuid() != 0:
        return "booting a container with systemd-nspawn needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it)"
    if platform.machine() not in ("x86_64", "aarch64"):
        return f"no locked wheels for {platform.machine()}"
    if debian_mirror() is None:
        return "no Debian mirror configured in /etc/apt (debootstrap needs one)"
    return None


def debian_mirror() -> str | None:
    """The Debian archive this machine's apt uses (deb822 or one-line sources), never a guess."""
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    sources_d = Path("/etc/apt/sources.list.d")
    if sources_d.is_dir():
        candidates += sorted(sources_d.iterdir())
    for path in candidates:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for uri in re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE
            ):
                if "security" not in uri and uri.rstrip("/").endswith("/debian"):
                    return str(uri)
    return None


def rootfs() -> Path:
    """The cached debootstrapped trixie (built on first use, about a minute; atomic)."""
    key = hashlib.sha256(f"{SUITE} minbase {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    target = cache_dir() / f"{SUITE}-{key}"
    if (target / "usr/lib/systemd/systemd").exists():
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    mirror = debian_mirror()
    assert mirror is not None
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
         str(partial), mirror],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}")
    partial.rename(target)
    return target


def container_python_version(root: Path) -> str:
    """ "3.13" for trixie: the version the wheelhouse is fetched for."""
    found = sorted(p.name for p in (root / "usr/bin").glob("python3.[0-9]*") if "-" not in p.name)
    versions = [n.removeprefix("python") for n in found if re.fullmatch(r"python3\.\d+", n)]
    assert versions, f"no python3.X in {root}/usr/bin"
    return versions[-1]


def wheelhouse(repo: Path, python_version: str) -> Path:
    """The locked artifacts for this architecture and `python_version`, cached by lock hash."""
    lock = hashlib.sha256()
    for name in ("build.txt", "runtime.txt"):
        lock.update((repo / "requirements" / name).read_bytes())
    target = (
        cache_dir() / f"wheelhouse-{platform.machine()}-py{python_version}-{lock.hexdigest()[:12]}"
    )
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [str(repo / "deploy/wheelhouse.sh"), str(partial), "--python", python_version],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "SCHOOLGATE_PYTHON": sys.executable},
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"wheelhouse failed:\n{result.stdout}\n{result.stderr}")
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def copy_checkout(repo: Path, destination: Path) -> None:
    """The files git would commit (tracked, plus untracked ones not ignored): no venv, no build."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listing.decode().split("\0")):
        source = repo / name
        if not source.is_file():
            continue  # deleted in the work tree, not yet in the index
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@dataclass
class Container:
    """A booted copy of the trixie root; `run` executes inside all of its namespaces."""

    root: Path
    machine: str
    process: subprocess.Popen[bytes]
    console_log: Path
    extra_links: list[str] = field(default_factory=list)

    def leader(self) -> int:
        """PID (on the host) of the container's init, systemd."""
        pids = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, timeout=10
        ).stdout.split()
        if not pids:
            raise RuntimeError(f"container has no init yet:\n{self.console()}")
        return int(pids[0])

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")[-4000:]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container (as root, clean environment), bounded by `timeout`."""
        command = [
            "nsenter", "--target", str(self.leader()), "--mount", "--uts", "--ipc", "--net",
            "--pid", "--cgroup", "--root", "--wd", "--",
            "/usr/bin/env", "-i", "--chdir=/root", f"PATH={CONTAINER_PATH}", "HOME=/root",
            "LANG=C.UTF-8", "TERM=dumb", "SYSTEMD_PAGER=", *argv,
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container: {' '.join(argv)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result

    def sh(self, script: str, *, timeout: float = 60, check: bool = True) -> str:
        return self.run(["/bin/bash", "-c", script], timeout=timeout, check=check).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.5
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGRTMIN+3 asks the container's systemd to halt cleanly; SIGKILL if it will not.
            with contextlib.suppress(Exception):
                self.run(["systemctl", "poweroff", "--no-block"], timeout=10, check=False)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(timeout=30)


def boot(root: Path, machine: str, veths: Sequence[tuple[str, str]], log: Path) -> Container:
    """Boot `root` (a copy the caller owns) with systemd-nspawn; wait for systemd to be up.

    `veths` are (host interface, container interface) pairs made by nspawn; the caller moves
    the host ends into namespaces of its own.
    """
    argv = [
        "systemd-nspawn", "--boot", "--quiet", f"--directory={root}", f"--machine={machine}",
        "--register=no", "--keep-unit", "--private-network", "--console=read-only",
        *(f"--network-veth-extra={host}:{inside}" for host, inside in veths),
    ]  # fmt: skip
    with log.open("wb") as console:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env={**os.environ, **NSPAWN_ENV},
            start_new_session=True,
        )
    container = Container(root, machine, process, log)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"systemd-nspawn exited with {process.returncode}:\n{container.console()}"
            )
        with contextlib.suppress(RuntimeError, AssertionError, subprocess.TimeoutExpired):
            state = container.run(
                ["systemctl", "is-system-running"], timeout=10, check=False
            ).stdout.strip()
            if state in ("running", "degraded"):
                return container
        time.sleep(0.5)
    container.stop()
    raise RuntimeError(f"container did not boot within {BOOT_TIMEOUT_S} s:\n{container.console()}")


def move_link(link: str, namespace: str, address: str, gateway: str) -> None:
    """Put nspawn's host end of a veth into `namespace` with `address`, routed via `gateway`."""
    _ip("link", "set", link, "netns", namespace)
    _ip("-n", namespace, "addr", "add", address, "dev", link)
    _ip("-n", namespace, "link", "set", link, "up")
    _ip("-n", namespace, "link", "set", "lo", "up")
    run_in(namespace, ["ip", "route", "add", "default", "via", gateway])
