"""`bmcell parity EXPORT_DIR`: every artefact against the float32 reference; non-zero exit on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.jobs.verify import arm64_parity, source_checkpoint, verify_export
from export.parity import failed_artefacts
from export.samples import MIN_GOLDEN, export_images

ARCH = typer.Option("native", help="native: this machine's kernels; arm64: also run the ExecuTorch and ONNX Runtime "
                    "artefacts on ARM64 kernels under qemu-aarch64 (built by `bmcell setup-arm64`; slow).")
CPUS = typer.Option(None, "--cpu", help="With --arch arm64, a qemu CPU model; repeat for several (default: "
                    "cortex-a53 and max).")
ARM64_ARTEFACTS = typer.Option(None, "--arm64-artefact", help="With --arch arm64, an artefact to run on ARM64 kernels; "
                               "repeat for several (default: every ExecuTorch and ONNX Runtime artefact).")
ARM64_THREADS = typer.Option(1, "--arm64-threads", min=1, help="With --arch arm64, the runtimes' threads (qemu runs "
                             "each on a core of this machine; outputs do not depend on it).")


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
    arch: str = ARCH,
    cpu: Optional[list[str]] = CPUS,
    arm64_artefact: Optional[list[str]] = ARM64_ARTEFACTS,
    arm64_threads: int = ARM64_THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Compare every artefact with the float32 reference: errors, SQNR, top-1 agreement, validation accuracy."""
    arm64 = arm64_parity(arch, cpu, arm64_artefact, arm64_threads)
    ckpt = None if golden_only else source_checkpoint(export_dir, checkpoint)
    images = None if ckpt is None else export_images(ckpt, data, 0, MIN_GOLDEN, console.print)
    with other_libraries_logged(export_dir, verbose):
        report = verify_export(export_dir, ckpt, images, console.print, arm64)
    exit_on_failure(report)
