"""Docs that must not drift from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "cli.md").read_text() == mod.render(), "run: python docs/gen_cli.py"


def test_readme_opens_with_install_run_and_test_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert block[0].startswith('pip install -e ".[dev]" && robustzoo train')
    assert block[1].startswith("pytest")
    # The CPU build of torch comes before the first command (pip would pull ~6 GB of CUDA otherwise).
    assert "download.pytorch.org/whl/cpu" in "\n".join(lines[:lines.index("```bash")])


def test_docs_links_resolve():
    import re

    for md in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", md.read_text()):
            if "://" not in target:
                assert (md.parent / target).is_file(), f"{md.name} links to missing {target}"
