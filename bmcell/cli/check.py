"""`bmcell check [RUN] --images DIR`: how far a lab's unlabelled photos are from the model's training data, how
accurate the model will probably be on them, and what to do next."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import VERBOSE, console, other_libraries_logged, reports_errors
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.shift import MIN_CHECK_IMAGES
from bmcell.jobs.lab import CHECK_JSON, CHECK_MD, check_run, summary_lines
from bmcell.jobs.release import default_checkpoint


@reports_errors
def check(
    checkpoint: Optional[Path] = typer.Argument(None, help="Run folder (uses best), NAME.json or NAME.safetensors "
                                                "(default: the released model in models/)."),
    images: Path = typer.Option(..., help=f"The lab's photos of single cells, any layout, no labels (at least "
                                f"{MIN_CHECK_IMAGES}; 100 or more give a firmer figure)."),
    out: Optional[Path] = typer.Option(None, help=f"Folder for {CHECK_JSON} and {CHECK_MD} (default: print only)."),
    own_data: Optional[Path] = typer.Option(None, help="The model's training folder to compare with (default: the "
                                            "recorded one, else the release's sample set)."),
    verbose: bool = VERBOSE,
) -> None:
    """Check a lab's unlabelled photos before trusting single answers: a shift score (share of photos outside the
    model's training data) with a verdict, an estimate of the accuracy, and the next step."""
    ckpt = load_checkpoint(checkpoint or default_checkpoint())
    with other_libraries_logged(out or Path(tempfile.gettempdir()) / "bmcell-check", verbose):
        report = check_run(ckpt, images, own_data, out, lambda line: console.print(line, highlight=False),
                           lambda m: console.print(f"[yellow]warning:[/] {m}", highlight=False))
    console.print("\n".join(summary_lines(report)), highlight=False)
    if out is not None:
        console.print(f"report: {out / CHECK_MD}, per photo: {out / CHECK_JSON}")
