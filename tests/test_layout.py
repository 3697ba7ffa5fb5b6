"""The module map (docs/architecture.md, "Layout"), checked: packages where their imports say,
and who may import whom. Read from the source with `ast`, so a lazy import inside a function
counts as well."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.support.proxy_harness import REPO_ROOT

CORE = REPO_ROOT / "filter" / "schoolgate"
ADDONS = REPO_ROOT / "addons" / "schoolgate" / "addons"
SUBPACKAGES = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").is_file())
# Who may not import whom: the sniffer and the gateway work beside the decision pipeline, never
# through it; the core knows nothing of mitmproxy (only `schoolgate run` starts the addons).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sniffer": ("schoolgate.pipeline", "schoolgate.matching", "schoolgate.classify"),
    "gateway": ("schoolgate.pipeline", "schoolgate.matching", "schoolgate.classify"),
    "media": ("schoolgate.pipeline", "schoolgate.banks", "schoolgate.matching"),
}
CORE_MAY_START_ADDONS = {"cli/app.py": "schoolgate.addons.runner"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_pyproject_names_every_package_folder() -> None:
    declared = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"schoolgate", "schoolgate.addons", "schoolgate.defaults"}
    found |= {f"schoolgate.{name}" for name in SUBPACKAGES}
    assert declared == found


def test_the_namespace_root_has_no_init() -> None:
    # `schoolgate` spans filter/ and addons/ (PEP 420); an __init__ in either would hide the other.
    assert not (CORE / "__init__.py").exists()
    assert not (ADDONS.parent / "__init__.py").exists()


@pytest.mark.parametrize("package", [*SUBPACKAGES, "addons"])
def test_every_subpackage_says_what_it_is_for(package: str) -> None:
    init = (ADDONS if package == "addons" else CORE / package) / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring, f"{init} has no docstring"


def test_the_core_never_imports_mitmproxy() -> None:
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE).as_posix()
        for name in imports_of(path):
            assert not name.startswith("mitmproxy"), f"{relative} imports {name}"
            if name.startswith("schoolgate.addons"):
                allowed = CORE_MAY_START_ADDONS.get(relative, "-")
                assert name.startswith(allowed), f"{relative} imports {name}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_subsystems_keep_out_of_each_other(package: str) -> None:
    for path in sorted((CORE / package).rglob("*.py")):
        for name in imports_of(path):
            assert not name.startswith(FORBIDDEN[package]), f"{path.name} imports {name}"


LONG_MODULE_LINES = 520  # "about 500"
LONG_MODULE_REASON = "Why one module of this length:"


def test_long_modules_say_why_they_are_one_module() -> None:
    for root in (CORE, ADDONS):
        for path in sorted(root.rglob("*.py")):
            if len(path.read_text().splitlines()) > LONG_MODULE_LINES:
                docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
                assert LONG_MODULE_REASON in docstring, f"{path}: split it, or say why not"
