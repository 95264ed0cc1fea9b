"""`bmcell quickstart`: the whole main job on the embedded synthetic cells, small enough for a laptop CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.jobs.quickstart import first_free_folder, run_quickstart

QUICK_EPOCHS = 10


@reports_errors
def quickstart(
    out: Optional[Path] = typer.Option(None, help="Folder for everything it makes (default: runs/quickstart, or -2, -3...)."),
    epochs: int = typer.Option(QUICK_EPOCHS, help="Training epochs."),
    verbose: bool = VERBOSE,
) -> None:
    """Synthesize cells, train MobileViT-XS briefly, evaluate it, classify a few images, export every target, check
    parity and measure latency; prints where it all is."""
    out = out or first_free_folder(Path("runs/quickstart"))
    with other_libraries_logged(out, verbose) as log:
        run_quickstart(out, epochs, console, log.detail)
    if not verbose:
        console.print(f"  other libraries' messages and per-artefact lines: {log.path} (--verbose shows them)")
