"""deploy/install.sh into a temporary root (--root, the DESTDIR-style dry run), and the units.

The installer runs for real with `--root DIR --venv <this venv>`: it writes the tree, modes and
owners, the configuration, the secret and the units, and enables the units offline with
`systemctl --root`. It skips only what a dry run must not do (create a user, pip install, start
services, load firewall rules). The owner is `daemon`, a user every Debian system has, so
ownership is really set and checked. The units are verified with `systemd-analyze verify` as
installed, their ExecStart binaries resolved at their final paths through a private mount
namespace in which the temporary root's /opt is mounted over /opt.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.proxy_harness import REPO_ROOT, VENV_BIN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="sets owners: needs root"),
]

INSTALL = REPO_ROOT / "deploy" / "install.sh"
UNITS = (
    "schoolgate.service",
    "schoolgate-nft.service",
    "schoolgate-resolver.service",
    "schoolgate-leases.service",
    "schoolgate-fastpath.service",
    "schoolgate-console.service",
    "schoolgate-sniffer@.service",
)
USER = "daemon"  # exists on every Debian-family system; the installer never creates it here
GROUP = grp.getgrgid(pwd.getpwnam(USER).pw_gid).gr_name


def install(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def dry_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = install(
        root, "--venv", str(VENV_BIN.parent), "--user", USER, "--student-interface", "wlan0", *args
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple[str, str, str, str]]:
    """Every path under root: mode, owner, group, and content hash or link target."""
    found: dict[str, tuple[str, str, str, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content = "-> " + os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = ""
        found[str(path.relative_to(root))] = (
            stat.filemode(info.st_mode),
            pwd.getpwuid(info.st_uid).pw_name,
            grp.getgrgid(info.st_gid).gr_name,
            content,
        )
    return found


def schoolgate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed schoolgate on the installed configuration."""
    env = {
        **os.environ,
        "SCHOOLGATE_CONFIG": str(root / "etc/schoolgate/schoolgate.yaml"),
        "SCHOOLGATE_DATA_DIR": str(root / "var/lib/schoolgate"),
    }
    return subprocess.run(
        [str(root / "opt/schoolgate/venv/bin/schoolgate"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@dataclass
class Installed:
    root: Path
    output: str


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("root")
    return Installed(root, dry_install(root).stdout)


# ---------------------------------------------------------------------------------------------
# The tree


@pytest.mark.parametrize(
    ("path", "mode", "owner", "group"),
    [
        ("opt/schoolgate", "drwxr-xr-x", "root", "root"),
        ("etc/schoolgate", "drwxr-x---", "root", GROUP),
        ("etc/schoolgate/schoolgate.yaml", "-rw-r-----", "root", GROUP),
        ("etc/schoolgate/secrets", "drwx------", USER, GROUP),
        ("etc/schoolgate/secrets/webhook-secret", "-rw-------", USER, GROUP),
        ("var/lib/schoolgate", "drwxr-x---", USER, GROUP),
        ("var/lib/schoolgate/ca", "drwx------", USER, GROUP),
        ("var/log/schoolgate", "drwxr-x---", USER, GROUP),
        *[(f"etc/systemd/system/{unit}", "-rw-r--r--", "root", "root") for unit in UNITS],
    ],
)
def test_tree_modes_and_owners(
    installed: Installed, path: str, mode: str, owner: str, group: str
) -> None:
    assert snapshot(installed.root)[path][:3] == (mode, owner, group)


def test_venv_link_and_secret(installed: Installed) -> None:
    link = installed.root / "opt/schoolgate/venv"
    assert link.is_symlink()
    assert Path(os.readlink(link)) == VENV_BIN.parent
    secret = (installed.root / "etc/schoolgate/secrets/webhook-secret").read_text()
    assert len(secret) == 64
    int(secret, 16)  # 32 random bytes, hex


def test_config_is_valid_and_set_up_for_the_gateway(installed: Installed, tmp_path: Path) -> None:
    checked = schoolgate(installed.root, "check-config", "--json")
    assert checked.returncode == 0, checked.stderr
    text = (installed.root / "etc/schoolgate/schoolgate.yaml").read_text()
    assert "  mode: transparent  # regular: an explicit proxy" in text  # comments kept
    assert "  listen_host: 0.0.0.0\n" in text
    assert "  path: /var/log/schoolgate/decisions.jsonl" in text
    assert "  student_interfaces: [wlan0]" in text
    assert json.loads(checked.stdout)["resolver"]["enabled"] is True  # the gateway's resolver
    # The firewall the installed configuration drives is one nft accepts.
    ruleset = schoolgate(installed.root, "nft", "render")
    assert ruleset.returncode == 0, ruleset.stderr
    (tmp_path / "r.nft").write_text(ruleset.stdout)
    check = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(tmp_path / "r.nft")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert '"wlan0"' in ruleset.stdout


def test_units_are_the_shipped_ones_for_the_service_user(installed: Installed) -> None:
    for unit in UNITS:
        shipped = (REPO_ROOT / "deploy/systemd" / unit).read_text()
        expected = shipped.replace("\nUser=schoolgate\n", f"\nUser={USER}\n").replace(
            "\nGroup=schoolgate\n", f"\nGroup={GROUP}\n"
        )
        assert (installed.root / "etc/systemd/system" / unit).read_text() == expected
    wants = installed.root / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} >= {"schoolgate.service", "schoolgate-nft.service"}


def test_ca_is_made_or_its_absence_explained(installed: Installed) -> None:
    ca = installed.root / "var/lib/schoolgate/ca"
    has_ca_command = "    ca " in schoolgate(installed.root, "--help").stdout
    if has_ca_command:
        files = [p for p in ca.rglob("*") if p.is_file()]
        assert files, "`schoolgate ca init` ran but left nothing in the CA folder"
        for path in files:  # the key and everything beside it: the service user's alone
            assert path.stat().st_mode & 0o077 == 0, path
            assert pwd.getpwuid(path.stat().st_uid).pw_name == USER
    else:
        assert "no `ca init`" in installed.output
    assert 'docs/install.md ("The interception CA and roll-out")' in installed.output
    assert "http://127.0.0.1:9861/metrics" in installed.output


def test_second_run_changes_nothing_and_keeps_edits(installed: Installed) -> None:
    config = installed.root / "etc/schoolgate/schoolgate.yaml"
    config.write_text(config.read_text().replace("school_name: This school", "school_name: Oak"))
    before = snapshot(installed.root)
    result = dry_install(installed.root)
    assert "keeping" in result.stdout
    assert snapshot(installed.root) == before
    assert "school_name: Oak" in config.read_text()


# ---------------------------------------------------------------------------------------------
# systemd


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on installed units, with root/opt mounted over /opt privately."""
    unit_dir = root / "etc/systemd/system"
    script = (
        f'mount --bind "{root}/opt" /opt && cd "{unit_dir}" && '
        f'SYSTEMD_UNIT_PATH="{unit_dir}:" exec systemd-analyze verify {" ".join(units)}'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_systemd_analyze_verify_is_clean(installed: Installed) -> None:
    result = verify(
        installed.root,
        "schoolgate.service",
        "schoolgate-nft.service",
        "schoolgate-resolver.service",
        "schoolgate-leases.service",
        "schoolgate-fastpath.service",
        "schoolgate-console.service",
        "schoolgate-sniffer@wlan0.service",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_verify_catches_a_broken_unit(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    unit = root / "etc/systemd/system/schoolgate.service"
    unit.write_text(
        unit.read_text().replace(
            "/opt/schoolgate/venv/bin/schoolgate run", "/opt/schoolgate/venv/bin/no-such run"
        )
    )
    result = verify(root, "schoolgate.service")
    assert result.returncode != 0
    assert "no-such" in result.stderr


def exposure(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(installed: Installed, unit: str, tmp_path: Path) -> None:
    # systemd's own exposure score, 0 (locked down) to 10: every unit stays at 3.0 or below.
    result = exposure(installed.root / "etc/systemd/system" / unit)
    assert result.returncode == 0, result.stdout[-2000:]
    # ... and the score is earned by the hardening lines: without them the same unit fails.
    bare = tmp_path / unit
    lines = (installed.root / "etc/systemd/system" / unit).read_text().splitlines()
    keep = ("[", "Description", "ExecS", "ExecR", "Type", "User", "Group", "Environment", "Remain")
    bare.write_text("\n".join(line for line in lines if line.startswith(keep)) + "\n")
    assert exposure(bare).returncode != 0


def test_proxy_unit_has_no_capabilities_and_reloads_with_sighup() -> None:
    text = (REPO_ROOT / "deploy/systemd/schoolgate.service").read_text().splitlines()
    assert "CapabilityBoundingSet=" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "Type=notify" in text
    assert "ReadWritePaths=/var/lib/schoolgate /var/log/schoolgate" in text
    sniffer = (REPO_ROOT / "deploy/systemd/schoolgate-sniffer@.service").read_text().splitlines()
    assert "CapabilityBoundingSet=CAP_NET_RAW" in sniffer
    nft = (REPO_ROOT / "deploy/systemd/schoolgate-nft.service").read_text().splitlines()
    assert "ExecStop=-/usr/sbin/nft delete table inet schoolgate" in nft
    assert "RemainAfterExit=yes" in nft
    leases = (REPO_ROOT / "deploy/systemd/schoolgate-leases.service").read_text().splitlines()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in leases
    assert any(line.endswith("nft leases --follow --config /etc/schoolgate/schoolgate.yaml")
               for line in leases)  # fmt: skip
    # The fast path's writer holds CAP_NET_ADMIN and nothing else; the resolver none at all.
    fastpath = (REPO_ROOT / "deploy/systemd/schoolgate-fastpath.service").read_text().splitlines()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in fastpath
    assert "RuntimeDirectory=schoolgate-fastpath" in fastpath
    resolver = (REPO_ROOT / "deploy/systemd/schoolgate-resolver.service").read_text().splitlines()
    assert "CapabilityBoundingSet=" in resolver


# ---------------------------------------------------------------------------------------------
# Uninstall


@pytest.fixture
def scratch_install(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    dry_install(root)
    return root


def test_uninstall_keeps_data_then_purge_removes_everything(scratch_install: Path) -> None:
    root = scratch_install
    (root / "var/lib/schoolgate/banks.sqlite").write_bytes(b"bank")
    result = install(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not (root / "opt/schoolgate").exists()
    for unit in UNITS:
        assert not (root / "etc/systemd/system" / unit).exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()
    assert (root / "var/lib/schoolgate/banks.sqlite").read_bytes() == b"bank"
    assert (root / "etc/schoolgate/schoolgate.yaml").exists()
    assert "kept" in result.stdout

    again = install(root, "--uninstall")
    assert again.returncode == 0, again.stderr

    purged = install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    left = [p for p in root.rglob("*") if not p.is_dir() or "schoolgate" in p.name]
    assert left == []
    once_more = install(root, "--uninstall", "--purge")
    assert once_more.returncode == 0, once_more.stderr
    assert "nothing to remove" in once_more.stdout


def test_reinstall_after_uninstall_keeps_config(scratch_install: Path) -> None:
    root = scratch_install
    secret = (root / "etc/schoolgate/secrets/webhook-secret").read_text()
    assert install(root, "--uninstall").returncode == 0
    dry_install(root)
    assert (root / "etc/schoolgate/secrets/webhook-secret").read_text() == secret
    assert (root / "opt/schoolgate/venv").is_symlink()


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("os_release", "arch", "message"),
    [
        ('ID=debian\nVERSION_ID="11"\n', "x86_64", "Debian 11 is too old"),
        ('ID=ubuntu\nVERSION_ID="20.04"\n', "x86_64", "Ubuntu 20.04 is too old"),
        ('ID=raspbian\nVERSION_ID="12"\n', "armv7l", "64-bit Raspberry Pi OS"),
        ('ID=fedora\nVERSION_ID="40"\n', "x86_64", "unsupported system 'fedora'"),
    ],
)
def test_unsupported_systems_are_refused(
    tmp_path: Path, os_release: str, arch: str, message: str
) -> None:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    result = install(
        tmp_path / "root",
        "--venv", str(VENV_BIN.parent), "--user", USER, "--student-interface", "wlan0",
        env={"SCHOOLGATE_OS_RELEASE": str(release), "SCHOOLGATE_ARCH": arch},
    )  # fmt: skip
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "root/etc/schoolgate").exists()


def _python311() -> str | None:
    """A Python 3.11 here (Debian 12's python3, or pyenv's), to play a bookworm gateway's."""
    for candidate in (
        "/usr/bin/python3.11",
        str(Path.home() / ".pyenv/versions/3.11.7/bin/python3"),
    ):
        if Path(candidate).exists():
            return candidate
    return None


def test_bookworm_without_a_new_python_is_told_the_ways_forward(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    # Every system tool but no Python at all on PATH, and no pyenv: no 3.12 or 3.13 to find.
    bare = tmp_path / "bin"
    bare.mkdir()
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in Path(directory).iterdir():
            if not tool.name.startswith("python") and not (bare / tool.name).exists():
                os.symlink(tool, bare / tool.name)
    env = {
        "PATH": str(bare), "PYENV_ROOT": str(tmp_path / "no-pyenv"), "HOME": str(tmp_path),
        "SCHOOLGATE_OS_RELEASE": str(release), "SCHOOLGATE_ARCH": "aarch64",
    }  # fmt: skip
    result = subprocess.run(
        [str(INSTALL), "--root", str(tmp_path / "root"), "--user", USER,
         "--student-interface", "wlan0"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "this is bookworm, whose python3 is 3.11" in result.stderr
    assert "upgrade the gateway to Debian 13 / Raspberry Pi OS trixie" in result.stderr
    assert "--python /opt/pyenv/versions/3.13.X/bin/python3" in result.stderr
    assert not (tmp_path / "root/opt/schoolgate/venv").exists()


def test_a_python_the_lock_does_not_cover_is_refused(tmp_path: Path) -> None:
    python311 = _python311()
    if python311 is None:
        pytest.skip("no Python 3.11 on this machine to offer the installer")
    result = install(
        tmp_path / "root", "--python", python311, "--user", USER, "--student-interface", "wlan0"
    )
    assert result.returncode == 1
    assert f"{python311} is not Python 3.12 or 3.13 (the versions the lock covers)" in result.stderr


def test_first_install_needs_a_student_interface(tmp_path: Path) -> None:
    result = install(tmp_path / "root", "--venv", str(VENV_BIN.parent), "--user", USER)
    assert result.returncode == 1
    assert "--student-interface IFACE" in result.stderr


def test_bad_options_are_refused(tmp_path: Path) -> None:
    assert "unknown option --frobnicate" in install(tmp_path, "--frobnicate").stderr
    assert "--purge goes with --uninstall" in install(tmp_path, "--purge").stderr
    result = install(tmp_path / "r", "--venv", str(tmp_path), "--user", USER,
                     "--student-interface", "wlan0")  # fmt: skip
    assert "has no bin/schoolgate" in result.stderr


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: `make sysdeps` installs it")
    scripts = sorted(str(p) for p in (REPO_ROOT / "deploy").glob("*.sh"))
    result = subprocess.run(
        [shellcheck, *scripts], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout


def unit_commands(unit: str) -> list[list[str]]:
    """The schoolgate command lines a unit runs (Exec*= lines), without the binary."""
    binary = "/opt/schoolgate/venv/bin/schoolgate"
    found = []
    for line in (REPO_ROOT / "deploy/systemd" / unit).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.startswith("Exec") and value.lstrip("-").startswith(binary):
            found.append(value.lstrip("-").split()[1:])
    return found


@pytest.mark.parametrize("unit", UNITS)
def test_unit_commands_are_real_schoolgate_commands(installed: Installed, unit: str) -> None:
    commands = unit_commands(unit)
    assert commands, f"{unit} runs no schoolgate command"
    available = schoolgate(installed.root, "--help").stdout
    for argv in commands:
        if f"    {argv[0]} " not in available:
            # `sniff` comes from the ca-sniffer branch; once merged this check runs.
            pytest.skip(f"this schoolgate has no `{argv[0]}` command yet")
        argv = [arg.replace("%i", "wlan0") for arg in argv]
        # argparse accepts the command line (subcommand and options exist) and stops at --help.
        result = schoolgate(installed.root, *argv, "--help")
        assert result.returncode == 0, f"{unit}: schoolgate {' '.join(argv)}: {result.stderr}"
    if unit == "schoolgate.service":  # ExecStartPre really validates the installed file
        installed_config = installed.root / "etc/schoolgate/schoolgate.yaml"
        assert schoolgate(installed.root, "check-config", str(installed_config)).returncode == 0
