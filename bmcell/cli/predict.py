"""`bmcell predict [CKPT] IMAGE...`: top-k classes with probabilities for each image (the released model when no
checkpoint is given)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bmcell.cli.common import console, err_console, reports_errors
from bmcell.core.checkpoint import load_checkpoint, names_a_checkpoint
from bmcell.core.device import select_device
from bmcell.core.errors import BmcellError
from bmcell.core.inference import Classifier
from bmcell.jobs.release import default_checkpoint


def split_checkpoint_argument(paths: list[Path]) -> tuple[Path, list[Path]]:
    """(checkpoint, images): the first path when it is a run folder or a .json/.safetensors, else the released model."""
    first = paths[0]
    if names_a_checkpoint(first):
        if len(paths) == 1:
            raise BmcellError(f"no image given after the checkpoint {first}")
        return first, paths[1:]
    return default_checkpoint(), paths


@reports_errors
def predict(
    paths: list[Path] = typer.Argument(..., metavar="[CKPT] IMAGE...",
                                       help="Optionally a run folder (uses best), NAME.json or NAME.safetensors "
                                            "(default: the released model in models/), then the images."),
    top_k: int = typer.Option(3, min=1, help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Classify images; an unreadable image is reported and makes the exit status 1, the rest are still answered."""
    checkpoint, images = split_checkpoint_argument(paths)
    results = Classifier(load_checkpoint(checkpoint), select_device(device)).predict(images, top_k)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        table = Table("image", "answer", *(f"#{i + 1}" for i in range(top_k)))
        for r in results:
            if not r.error:
                answer = "[yellow]uncertain - check by eye[/]" if r.uncertain else r.top[0][0]
                table.add_row(r.image, answer, *(f"{c} {p:.3f}" for c, p in r.top))
        console.print(table)
    failed = [r for r in results if r.error]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {r.error}", highlight=False)
    if failed:
        raise typer.Exit(1)
