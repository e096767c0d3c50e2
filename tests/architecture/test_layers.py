"""The architecture is part of the product: these tests keep the layering honest."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"
MEMBERS = ["domain", "application", "infrastructure", "api", "dispatcher", "worker", "cli"]

#: distribution name → import name, where they differ.
IMPORT_NAMES = {
    "sqlalchemy": "sqlalchemy",
    "pyjwt": "jwt",
    "pyyaml": "yaml",
    "argon2-cffi": "argon2",
    "aio-pika": "aio_pika",
    "prometheus-client": "prometheus_client",
}


#: Declared for use at run time though never imported by name (SQLAlchemy loads the driver
#: named in the database URL; uvicorn parses HTTP with httptools when it is installed).
RUNTIME_ONLY = {"infrastructure": {"aiosqlite"}, "api": {"httptools"}}


def _imports(package: str) -> set[str]:
    """Top-level names imported anywhere in a member's source tree."""
    found: set[str] = set()
    for path in (PACKAGES / package / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def _declared(package: str) -> set[str]:
    meta = tomllib.loads((PACKAGES / package / "pyproject.toml").read_text())
    names = set()
    for requirement in meta["project"]["dependencies"]:
        dist = requirement.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            dist = dist.split(sep)[0]
        dist = dist.strip().lower()
        if dist.startswith("opentelemetry-"):  # one namespace package, many distributions
            names.add("opentelemetry")
            continue
        names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_domain_imports_only_the_standard_library() -> None:
    assert _third_party(_imports("domain")) <= {"scheduler_domain"}


#: The one library the use cases may call: JSON Schema validation of users' parameters against
#: a template's schema (pure functions, no I/O: remote ``$ref`` retrieval is refused in
#: ``templates/param_schema.py``). A port for it is the next step (docs/architecture.md).
APPLICATION_LIBRARIES = {"jsonschema", "referencing"}


def test_application_imports_only_the_domain() -> None:
    allowed = {"scheduler_domain", "scheduler_application", *APPLICATION_LIBRARIES}
    assert _third_party(_imports("application")) <= allowed


@pytest.mark.parametrize("member", MEMBERS)
def test_each_member_declares_exactly_what_it_imports(member: str) -> None:
    own = f"scheduler_{member}"
    imported = _third_party(_imports(member)) - {own}
    declared = _declared(member) - RUNTIME_ONLY.get(member, set())
    assert imported <= declared, f"{member} imports undeclared packages: {imported - declared}"
    assert declared <= imported, (
        f"{member} declares packages it never imports: {declared - imported}"
    )


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


SOURCES = ["packages", "tests", "scripts", "migrations"]


def test_ruff_finds_nothing_to_fix() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted() -> None:
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", "--no-cache", *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_domain_and_application_type_check_strictly() -> None:
    """mypy --strict (configured in pyproject.toml) on the two inner layers."""
    result = subprocess.run(
        [_tool("mypy"), "--no-incremental"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
