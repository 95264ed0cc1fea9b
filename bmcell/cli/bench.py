"""`bmcell bench EXPORT_DIR`: one latency table over eager PyTorch and every artefact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from export.arm64.environment import counting_environment
from export.bench import BENCH_MD, run_bench
from export.manifest import read_manifest
from export.pipeline import folded_model


@reports_errors
def bench(
    export_dir: Path = typer.Argument(..., help="A folder written by `bmcell export`."),
    checkpoint: Optional[Path] = typer.Option(None, help="Source checkpoint for the eager baseline (default: manifest's)."),
    runs: int = typer.Option(50, min=50, help="Timed batch-1 runs per artefact and thread setting."),
    warmup: int = typer.Option(10, min=1, help="Untimed runs first."),
    arm64_instructions: bool = typer.Option(False, "--arm64-instructions", help="Also count each ExecuTorch "
                                            "artefact's ARM64 instructions per inference under qemu-aarch64 (needs "
                                            "`bmcell setup-arm64` with Debian's qemu-user installed)."),
    verbose: bool = VERBOSE,
) -> None:
    """Load time, p50/p90 latency (1 thread and all threads), size, accuracy and speed-up over eager PyTorch."""
    counting = counting_environment() if arm64_instructions else None
    manifest = read_manifest(export_dir)
    ckpt = load_checkpoint(checkpoint or Path(manifest["source_checkpoint"]["path"]))
    with other_libraries_logged(export_dir, verbose):
        run_bench(export_dir, folded_model(ckpt), runs, warmup, console.print, counting)
    console.print((Path(export_dir) / BENCH_MD).read_text())
