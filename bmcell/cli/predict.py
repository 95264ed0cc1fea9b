"""`bmcell predict CKPT IMAGE...`: top-k classes with probabilities for each image."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from bmcell.cli.common import console, err_console, reports_errors


@reports_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="Run folder (uses best), NAME.json or NAME.safetensors."),
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    top_k: int = typer.Option(3, min=1, help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Classify images; an unreadable image is reported and makes the exit status 1, the rest are still answered."""
    from bmcell.checkpoint import load_checkpoint
    from bmcell.engine import select_device
    from bmcell.inference import Classifier

    results = Classifier(load_checkpoint(checkpoint), select_device(device)).predict(images, top_k)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        table = Table("image", *(f"#{i + 1}" for i in range(top_k)))
        for r in results:
            if not r.error:
                table.add_row(r.image, *(f"{c} {p:.3f}" for c, p in r.top))
        console.print(table)
    failed = [r for r in results if r.error]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {r.error}", highlight=False)
    if failed:
        raise typer.Exit(1)
