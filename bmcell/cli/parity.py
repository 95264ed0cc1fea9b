"""`bmcell parity EXPORT_DIR`: every artefact against the float32 reference; non-zero exit on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.jobs.verify import source_checkpoint, verify_export
from export.parity import failed_artefacts
from export.samples import MIN_GOLDEN, export_images


def exit_on_failure(report: dict) -> None:
    """Say whether parity passed; exit 1 naming the artefacts outside their tier."""
    if not report["passed"]:
        console.print(f"[bold red]parity failed[/] for {', '.join(failed_artefacts(report))}")
        raise typer.Exit(1)
    console.print("[green]parity passed[/] (Core ML rows say 'not run' on Linux: that is not a pass)")


@reports_errors
def parity(
    export_dir: Path = typer.Argument(..., help="A folder written by `bmcell export`."),
    checkpoint: Optional[Path] = typer.Option(None, help="Source checkpoint (default: the one in the manifest)."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder (default: the one the checkpoint was trained on, "
                                        "else a released model's own sample set)."),
    golden_only: bool = typer.Option(False, "--golden-only", help="Only the golden set; no validation-split accuracy."),
    verbose: bool = VERBOSE,
) -> None:
    """Compare every artefact with the float32 reference: errors, SQNR, top-1 agreement, validation accuracy."""
    ckpt = None if golden_only else source_checkpoint(export_dir, checkpoint)
    images = None if ckpt is None else export_images(ckpt, data, 0, MIN_GOLDEN, console.print)
    with other_libraries_logged(export_dir, verbose):
        report = verify_export(export_dir, ckpt, images, console.print)
    exit_on_failure(report)
