"""The format registry: every module in this package lists its formats in FORMATS; adding a format is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from export.formats.base import ExportFormat


def _discover() -> dict[str, ExportFormat]:
    """Import each format module of this package and collect its FORMATS."""
    found: dict[str, ExportFormat] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for fmt in module.FORMATS:
            if fmt.name in found:
                raise RuntimeError(f"two export formats are called {fmt.name!r}")
            found[fmt.name] = fmt
    return found


FORMATS: dict[str, ExportFormat] = _discover()
