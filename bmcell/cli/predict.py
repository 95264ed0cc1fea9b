"""`bmcell predict [CKPT] IMAGE...`: top-k classes with probabilities for each image (the released model when no
checkpoint is given)."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePath

import typer
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from bmcell.cli.common import console, err_console, reports_errors
from bmcell.core.checkpoint import load_checkpoint, names_a_checkpoint
from bmcell.core.device import select_device
from bmcell.core.errors import BmcellError
from bmcell.core.inference import Classifier, Prediction
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


UNCERTAIN_TEXT = "uncertain - check by eye"


class JsonAnswers:
    """--json: one array of answers (error entries included), each written as soon as its batch is answered; the
    same text json.dumps(answers, indent=2) gives."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, results: list[Prediction]) -> None:
        """Write these answers."""
        for r in results:
            typer.echo(("[\n" if self.count == 0 else ",\n") + textwrap.indent(json.dumps(r.to_dict(), indent=2), "  "),
                       nl=False)
            self.count += 1

    def close(self) -> None:
        """End the array."""
        typer.echo("\n]" if self.count else "[]")


def capped(widths: list[int], room: int) -> list[int]:
    """The widths with the widest cut to one cap (at least 1), the largest that makes them fit in room if any does."""
    cap = max(widths)
    while cap > 1 and sum(min(width, cap) for width in widths) > room:
        cap -= 1
    return [min(width, cap) for width in widths]


class AnswerTable:
    """The answer table, drawn a batch of rows at a time: its column widths are fixed up front from what any answer
    can hold (a longer answer folds), so each row is printed as soon as its image is answered."""

    def __init__(self, images: list[Path], classes: list[str], top_k: int) -> None:
        width = max(24, console.width // 3)
        names = distinguishing_ends([str(image) for image in images], width)
        self.names = iter(names)
        self.caption = ("image: the end of each path that tells it apart (--json gives them whole)"
                        if names != [str(image) for image in images] else None)
        longest, image = max(map(len, classes)), max(len("image"), *map(len, names))
        wanted = [max(len("answer"), len(UNCERTAIN_TEXT), longest), *[longest + len(" 0.000")] * top_k]
        self.widths = [image, *capped(wanted, console.width - image - 3 * (len(wanted) + 1) - 1)]  # less borders
        self._print(self._table(header=True), 0, -1)  # all but the bottom edge

    def _table(self, header: bool, rows: Iterable[tuple] = (), caption: str | None = None) -> Table:
        """The table with these rows, at the fixed widths."""
        table = Table(show_header=header, caption=caption, caption_justify="left")
        table.add_column("image", no_wrap=True, width=self.widths[0])
        for i, width in enumerate(self.widths[1:]):
            table.add_column(f"#{i}" if i else "answer", overflow="fold", width=width)
        for row in rows:
            table.add_row(*row)
        return table

    @staticmethod
    def _print(table: Table, start: int, stop: int | None) -> None:
        """Print the lines start:stop of the drawn table."""
        lines = console.render_lines(table, console.options, pad=False, new_lines=True)
        console.print(Segments([segment for line in lines[start:stop] for segment in line]), end="")

    def add(self, results: list[Prediction]) -> None:
        """Print the rows of these answers (an unreadable image has none)."""
        rows = []
        for r, name in zip(results, self.names):
            if not r.error:
                answer = f"[magenta]{UNKNOWN_TEXT}[/] (novelty {r.novelty:.2f})" if r.unknown \
                    else f"[yellow]{UNCERTAIN_TEXT}[/]" if r.uncertain else r.top[0][0]
                rows.append((Text(name), answer, *(f"{c} {p:.3f}" for c, p in r.top)))
        if rows:
            self._print(self._table(header=False, rows=rows), 1, -1)  # between the top and bottom edges

    def close(self) -> None:
        """Print the bottom edge and the caption."""
        self._print(self._table(header=False, caption=self.caption), 1, None)


@reports_errors
def predict(
    paths: list[Path] = typer.Argument(..., metavar="[CKPT] IMAGE...",
                                       help="Optionally a run folder (uses best), NAME.json or NAME.safetensors "
                                            "(default: the released model in models/), then the images."),
    top_k: int = typer.Option(3, min=1, help="How many classes to show per image (at most the model's classes)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Classify images, printing each answer as soon as its batch is done; an unreadable image is reported and makes
    the exit status 1, the rest are still answered."""
    checkpoint, images = split_checkpoint_argument(paths)
    classifier = Classifier(load_checkpoint(checkpoint), select_device(device))
    top_k = min(top_k, len(classifier.classes))  # as many columns as the model has classes, at most
    shown = JsonAnswers() if as_json else AnswerTable(images, classifier.classes, top_k)
    errors = []
    for batch in classifier.batches(images, top_k):
        shown.add(batch)
        errors += [r.error for r in batch if r.error]
    shown.close()
    for error in errors:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
    if errors:
        raise typer.Exit(1)
