"""`bmcell predict [CKPT] IMAGE...`: top-k classes with probabilities for each image (the released model when no
checkpoint is given)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path, PurePath

import typer
from rich.table import Table
from rich.text import Text

from bmcell.cli.common import console, err_console, reports_errors
from bmcell.core.checkpoint import load_checkpoint, names_a_checkpoint
from bmcell.core.device import select_device
from bmcell.core.errors import BmcellError
from bmcell.core.inference import Classifier
from bmcell.core.novelty import UNKNOWN_TEXT
from bmcell.jobs.release import default_checkpoint


def split_checkpoint_argument(paths: list[Path]) -> tuple[Path, list[Path]]:
    """(checkpoint, images): the first path when it is a run folder or a .json/.safetensors, else the released model."""
    first = paths[0]
    if names_a_checkpoint(first):
        if len(paths) == 1:
            raise BmcellError(f"no image given after the checkpoint {first}")
        return first, paths[1:]
    return default_checkpoint(), paths


def distinguishing_ends(images: list[str], width: int) -> list[str]:
    """Each image path shortened to its distinguishing end: the fewest trailing path parts (at least the file name)
    that no other image shares, with more of the path where it fits in width, cut from the left with "…" when
    longer. A path given twice stays whole (then cut from the left)."""
    parts = [PurePath(image).parts or (image,) for image in images]
    suffixes: dict[int, Counter] = {}

    def shared(own: tuple[str, ...], count: int) -> bool:
        if count not in suffixes:
            suffixes[count] = Counter(other[-count:] for other in parts)
        return suffixes[count][own[-count:]] > 1

    def shown(image: str, own: tuple[str, ...], count: int) -> str:
        return "…/" + "/".join(own[-count:]) if count < len(own) else image

    ends = []
    for image, own in zip(images, parts):
        count = 1
        while count < len(own) and shared(own, count):
            count += 1
        while count < len(own) and len(shown(image, own, count + 1)) <= width:  # more of the path where it fits
            count += 1
        end = shown(image, own, count)
        ends.append(end if len(end) <= width else "…" + end[-(width - 1):])
    return ends


@reports_errors
def predict(
    paths: list[Path] = typer.Argument(..., metavar="[CKPT] IMAGE...",
                                       help="Optionally a run folder (uses best), NAME.json or NAME.safetensors "
                                            "(default: the released model in models/), then the images."),
    top_k: int = typer.Option(3, min=1, help="How many classes to show per image (at most the model's classes)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Classify images; an unreadable image is reported and makes the exit status 1, the rest are still answered."""
    checkpoint, images = split_checkpoint_argument(paths)
    classifier = Classifier(load_checkpoint(checkpoint), select_device(device))
    top_k = min(top_k, len(classifier.classes))  # as many columns as the model has classes, at most
    results = classifier.predict(images, top_k)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        answered = [r for r in results if not r.error]
        width = max(24, console.width // 3)
        names = distinguishing_ends([r.image for r in answered], width)
        table = Table(caption="image: the end of each path that tells it apart (--json gives them whole)"
                      if names != [r.image for r in answered] else None, caption_justify="left")
        table.add_column("image", no_wrap=True, min_width=min(width, max(map(len, names), default=5)))
        table.add_column("answer", overflow="fold")
        for i in range(top_k):
            table.add_column(f"#{i + 1}", overflow="fold")
        for r, name in zip(answered, names):
            answer = f"[magenta]{UNKNOWN_TEXT}[/] (novelty {r.novelty:.2f})" if r.unknown \
                else "[yellow]uncertain - check by eye[/]" if r.uncertain else r.top[0][0]
            table.add_row(Text(name), answer, *(f"{c} {p:.3f}" for c, p in r.top))
        console.print(table)
    failed = [r for r in results if r.error]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {r.error}", highlight=False)
    if failed:
        raise typer.Exit(1)
