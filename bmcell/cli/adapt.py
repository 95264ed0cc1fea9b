"""`bmcell adapt RUN --images DIR --out RUN2`: calibrate a model to a microscope from unlabelled photos (AdaBN)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.adapt import adapt_checkpoint
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.device import select_device
from bmcell.core.releases import refuse_out_inside_release
from bmcell.jobs.lab import carried_samples
from bmcell.jobs.release import MODELS_DIR, default_checkpoint


@reports_errors
def adapt(
    checkpoint: Optional[Path] = typer.Argument(None, help="Run folder (uses best), NAME.json or NAME.safetensors "
                                                "(default: the released model in models/)."),
    images: Path = typer.Option(..., help="The lab's own cell photos, any layout, no labels (at least 32; a few "
                                "hundred is better)."),
    out: Path = typer.Option(..., help="New folder for the adapted checkpoint (never overwritten)."),
    batch_size: int = typer.Option(32, min=2, help="Images per batch while re-estimating statistics."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Re-estimate the model's BatchNorm statistics on a lab's unlabelled photos and save the result as a new
    checkpoint (export, evaluate and crosslab take it like any other)."""
    refuse_out_inside_release(out, MODELS_DIR)
    source = load_checkpoint(checkpoint or default_checkpoint())
    best = adapt_checkpoint(source, images, out, select_device(device), batch_size,
                            lambda m: console.print(f"[yellow]warning:[/] {m}"), carried_samples(source))
    adapted = load_checkpoint(best)
    console.print(f"adapted {adapted.adapted_on['batchnorm_layers']} BatchNorm layers on "
                  f"{adapted.adapted_on['images']} images from {images} -> {best}")
    console.print(f"next: `bmcell crosslab {out} --data LABELLED_DIR` to measure it, "
                  f"`bmcell export {out} ...` to ship it")
