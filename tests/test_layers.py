"""Imports point down: the ground floor (settings, the run folder's contract, files, the
device plan, the envelope, the version) imports nothing of the appliance above it, and no
layer reaches up into the one that uses it. Read from the source, function-level imports
included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUND = ("appliance.config", "appliance.rundir", "appliance.files", "appliance.durations",
          "appliance.version", "appliance.devices", "appliance.envelope")
# package -> what it must never import
NOT_ABOVE = {
    **{module: ("appliance.",) for module in GROUND},
    "appliance.store": ("appliance.router", "appliance.gateway", "appliance.engine",
                        "appliance.cli"),
    "appliance.security": ("appliance.store", "appliance.router", "appliance.gateway",
                           "appliance.cli"),
    "appliance.models": ("appliance.engine", "appliance.gateway", "appliance.cli"),
    "appliance.kb": ("appliance.router", "appliance.gateway", "appliance.engine", "appliance.cli"),
    "appliance.engine": ("appliance.gateway", "appliance.router", "appliance.cli"),
    "appliance.skills": ("appliance.gateway", "appliance.cli"),
    "appliance.plugins": ("appliance.gateway", "appliance.router", "appliance.cli"),
    "ops": ("appliance.update", "appliance.gateway", "appliance.router", "appliance.cli"),
    "selfheal": ("appliance", "ops"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[Path]:
    return sorted(p for folder in ("appliance", "ops", "selfheal")
                  for p in (REPO / folder).rglob("*.py"))


def in_ground(imported: str) -> bool:
    return imported in ("appliance", "appliance.__version__") or any(
        imported == g or imported.startswith(f"{g}.") for g in GROUND)


def violations(name: str, imports: set[str]) -> list[str]:
    rules = [(owner, banned) for owner, banned in NOT_ABOVE.items()
             if name == owner or name.startswith(f"{owner}.")]
    wrong = []
    for imported in sorted(imports):
        for owner, banned in rules:
            if owner in GROUND and in_ground(imported):
                continue
            if any(imported == b.rstrip(".") or imported.startswith(b.rstrip(".") + ".")
                   for b in banned):
                wrong.append(f"{name} imports {imported} ({owner} must not reach up)")
    return wrong


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_a_layer_above_it(path: Path) -> None:
    assert violations(module_name(path), imports_of(path)) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def later():\n    from appliance.router.pipeline import Pipeline\n")
    assert violations("appliance.store.probe", imports_of(probe)) == [
        "appliance.store.probe imports appliance.router.pipeline "
        "(appliance.store must not reach up)",
        "appliance.store.probe imports appliance.router.pipeline.Pipeline "
        "(appliance.store must not reach up)"]
