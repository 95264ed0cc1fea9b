"""The layer contract in pyproject.toml (cli -> jobs -> export -> core, no cycles) holds, checked by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layers_point_one_way_and_nothing_imports_in_a_cycle():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


def test_every_bmcell_module_sits_in_a_layer():
    """A new module at bmcell/ top level would escape the contract: only the package files live there."""
    top = sorted(p.name for p in (ROOT / "bmcell").iterdir() if not p.name.startswith(("_", ".")) or p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py", "cli", "core", "jobs"], top
