"""`bmcell synth OUT`: write the embedded synthetic cell dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.data.synthetic import write_synthetic_dataset


@reports_errors
def synth(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty)."),
    per_class: int = typer.Option(80, help="Images of the most frequent class; rarer classes get fewer."),
    size: int = typer.Option(128, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
) -> None:
    """Write a class-per-folder dataset of synthetic, class-distinguishable, imbalanced cell images."""
    counts = write_synthetic_dataset(out, per_class=per_class, size=size, seed=seed)
    console.print(f"wrote {sum(counts.values())} images to {out}: {counts}")
