"""Every library robustzoo imports is declared in pyproject.toml, and the tested floors are the declared ones."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """'huggingface-hub>=1.3.2' -> 'huggingface-hub' (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def _imported_modules() -> dict[str, str]:
    """Top-level module -> a file that imports it, over the package and the method plugins."""
    found: dict[str, str] = {}
    for path in sorted([*ROOT.glob("robustzoo/**/*.py"), *ROOT.glob("plugins/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_library_is_declared():
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project.get("optional-dependencies", {}).values() for r in extra}
    ours = {"robustzoo", *(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir())}
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, where in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ours or module == "__future__":
            continue
        if not {_name(d) for d in dists.get(module, [module])} & declared:
            missing.append(f"{module} (imported in {where}; distribution {dists.get(module)})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_ci_installs_the_declared_floors():
    """.ci/run tests the floors it reads from pyproject.toml, so they cannot drift apart."""
    floors = {_name(r): r.split(">=")[1] for r in _pyproject()["project"]["dependencies"] if ">=" in r}
    assert {k: floors[k] for k in ("huggingface-hub", "timm", "pyyaml")} == {
        "huggingface-hub": "1.3.2", "timm": "1.0.21", "pyyaml": "6.0.1"}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "--system-site-packages" in ci and "huggingface-hub|timm|PyYAML" in ci
    assert "tests/test_hub.py" in ci and "tests/test_models.py" in ci
