"""The dependency lock: complete, hash-pinned, covering every supported system, and enforced.

`make test` also runs `deploy/lock.sh check` (the exports are what uv.lock says) and deptry (every
import declared); these tests check what those cannot: that the lock can be installed on every
supported platform without building surprises, and that the checks and the installer refuse what
they should.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import booted_debian
from tests.support.proxy_harness import REPO_ROOT, VENV_BIN

REQUIREMENTS = REPO_ROOT / "requirements"
# Published only as source: locked by the sdist's hash and built on install (needs g++, and for
# netfilterqueue Debian's libnetfilter-queue-dev, which make and install.sh install).
# Built from source with the locked build group (cython): weighted-levenshtein only for the
# optional `exchanges` extra (python-threatexchange), never on a gateway without it.
SDIST_ONLY = {"pdqhash", "netfilterqueue", "weighted-levenshtein"}
PLATFORMS = [(arch, py) for arch in ("x86_64", "aarch64") for py in ("312", "313")]


def requirement_blocks(name: str) -> dict[str, list[str]]:
    """package -> its hashes, from one exported requirements file."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in (REQUIREMENTS / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            current = line.split(";")[0].strip()
            found[current] = []
        elif "--hash=sha256:" in line:
            found[current].append(line.split("--hash=sha256:")[1].split()[0])
    return found


@pytest.mark.parametrize("name", ["build.txt", "runtime.txt", "dev.txt"])
def test_every_requirement_is_pinned_and_hashed(name: str) -> None:
    blocks = requirement_blocks(name)
    assert blocks
    for requirement, digests in blocks.items():
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", requirement), requirement
        assert digests, f"{requirement} has no hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests)


def test_runtime_lock_holds_what_the_appliance_imports() -> None:
    runtime = {r.split("==")[0].lower() for r in requirement_blocks("runtime.txt")}
    assert {"mitmproxy", "h11", "pdqhash", "backports-zstd", "onnxruntime", "av"} <= runtime
    assert "pytest" not in runtime, "test tools must not reach a gateway"
    mitmproxy = next(r for r in requirement_blocks("runtime.txt") if r.startswith("mitmproxy=="))
    assert mitmproxy.split("==")[1].startswith("12."), "mitmproxy 12.x only (h11 smuggling fix)"


def _wheel_fits(filename: str, arch: str, py: str) -> bool:
    tags = filename.removesuffix(".whl").split("-")[-3:]
    interpreters, abis, platforms = (t.split(".") for t in tags)
    interpreter_ok = f"cp{py}" in interpreters or any(
        i in ("py3", "py2.py3") or (i.startswith("cp3") and "abi3" in abis) for i in interpreters
    )
    abi_ok = bool({f"cp{py}", "abi3", "none"} & set(abis))
    platform_ok = "any" in platforms or any(
        p.endswith(f"_{arch}") and p.startswith("manylinux") for p in platforms
    )
    return interpreter_ok and abi_ok and platform_ok


def test_every_locked_package_installs_on_every_supported_platform() -> None:
    """A wheel for Linux x86_64/aarch64 x CPython 3.12/3.13, or a deliberately locked sdist."""
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    missing = []
    for package in lock["package"]:
        if package.get("source", {}).get("editable") or package.get("source", {}).get("virtual"):
            continue
        wheels = [w["url"].rsplit("/", 1)[1] for w in package.get("wheels", [])]
        for arch, py in PLATFORMS:
            if not any(_wheel_fits(w, arch, py) for w in wheels):
                if package["name"] in SDIST_ONLY and "sdist" in package:
                    continue
                missing.append(f"{package['name']} {package['version']} ({arch}, cp{py})")
    assert not missing, "no wheel (would build from source on a gateway): " + ", ".join(missing)


def test_dependency_checker_fails_on_undeclared_and_transitive_imports(tmp_path: Path) -> None:
    """deptry, configured as in pyproject.toml, is not a check that cannot fail."""
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "pyproject.toml", project / "pyproject.toml")
    (project / "pkg" / "ok.py").write_text("import yaml\nimport mitmproxy\n")
    (project / "pkg" / "bad.py").write_text("import certifi\nimport zstandard\n")
    result = subprocess.run(
        [str(VENV_BIN / "deptry"), "pkg", "--exclude", "a^",
         "--optional-dependencies-dev-groups", ""],
        cwd=project, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    report = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # deptry colours
    assert result.returncode == 1, report
    assert "DEP003 'certifi' imported but it is a transitive dependency" in report, report
    assert "DEP001 'zstandard' imported but missing" in report, report
    assert "DEP002 'numpy' defined as a dependency but not used" in report, report
    assert "DEP002 'hypothesis' defined as a dependency but not used" in report, report
    assert "yaml" not in report
    assert "'mitmproxy'" not in report  # imported (mitmproxy_rs, not imported here, may appear)


@pytest.mark.slow
def test_installer_refuses_a_tampered_wheelhouse(tmp_path: Path) -> None:
    """One altered file in the wheelhouse stops the install, before anything of it is used."""
    reason = booted_debian.why_cannot_boot()
    if reason is not None and "needs root" not in reason and "not installed" not in reason:
        pytest.skip(reason)
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no locked wheels for {platform.machine()}")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    cached = booted_debian.wheelhouse(REPO_ROOT, version)
    tampered = tmp_path / "wheelhouse"
    tampered.mkdir()
    victim = next(p for p in sorted(cached.iterdir()) if p.name.startswith("setuptools-"))
    for path in cached.iterdir():
        if path.is_file() and path != victim:
            os.symlink(path, tampered / path.name)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / victim.name).write_bytes(bytes(data))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(REPO_ROOT / "deploy/install-locked.sh"), str(venv / "bin/python"),
         str(REQUIREMENTS / "runtime.txt"), "--wheelhouse", str(tampered)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr, result.stderr
    assert victim.name.split("-")[0] in result.stderr
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "mitmproxy" not in installed
