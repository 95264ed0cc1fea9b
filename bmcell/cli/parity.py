"""`bmcell parity EXPORT_DIR`: every artefact against the float32 reference; non-zero exit on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors


def check_parity(export_dir: Path, checkpoint, data: Optional[Path], golden_only: bool) -> None:
    """Run parity (with the validation split unless golden_only) and exit 1 when an artefact fails."""
    from export.parity import PARITY_MD, failed_artefacts, run_parity
    from export.pipeline import validation_set

    validation = None
    if not golden_only:
        from bmcell.cli.export import data_folder

        console.print("reference accuracy on the validation split ...")
        validation = validation_set(checkpoint, data_folder(checkpoint, data))
    report = run_parity(export_dir, validation, console.print)
    console.print(f"report: {export_dir / PARITY_MD}")
    if not report["passed"]:
        console.print(f"[bold red]parity failed[/] for {', '.join(failed_artefacts(report))}")
        raise typer.Exit(1)
    console.print("[green]parity passed[/] (Core ML rows say 'not run' on Linux: that is not a pass)")


@reports_errors
def parity(
    export_dir: Path = typer.Argument(..., help="A folder written by `bmcell export`."),
    checkpoint: Optional[Path] = typer.Option(None, help="Source checkpoint [default: the one in the manifest]."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder [default: the one the checkpoint was trained on]."),
    golden_only: bool = typer.Option(False, "--golden-only", help="Only the golden set; no validation-split accuracy."),
) -> None:
    """Compare every artefact with the float32 reference: errors, SQNR, top-1 agreement, validation accuracy."""
    from bmcell.checkpoint import load_checkpoint
    from bmcell.errors import BmcellError
    from export.manifest import read_manifest

    manifest = read_manifest(export_dir)
    ckpt = None
    if not golden_only:
        ckpt = load_checkpoint(checkpoint or Path(manifest["source_checkpoint"]["path"]))
        if ckpt.meta["weights"]["sha256"] != manifest["source_checkpoint"]["weights_sha256"]:
            raise BmcellError(f"{ckpt.json_path} is not the checkpoint {export_dir} was exported from (weights differ)")
    check_parity(export_dir, ckpt, data, golden_only)
