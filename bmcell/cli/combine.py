"""`bmcell combine OUT --source NAME=DIR ...`: several labs' images as one training folder with a split by series."""

from __future__ import annotations

from pathlib import Path

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.data.sources import combine_sources, sources_from_recipe
from bmcell.core.errors import BmcellError


def _named(values: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE options as a dict, with a clear error for anything else or a NAME given twice."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise BmcellError(f"{option} {value!r}: expected NAME=VALUE")
        if name in pairs:
            raise BmcellError(f"{option} {name}=... is given twice ({pairs[name]!r} and {rest!r}); give each NAME once")
        pairs[name] = rest
    return pairs


@reports_errors
def combine(
    out: Path = typer.Argument(..., help="New folder: data/, split.csv, heldout/<source>/, sources.json."),
    source: list[str] = typer.Option(..., help="NAME=DIR, a class-per-folder source; repeatable."),
    groups: list[str] = typer.Option([], help="NAME=FILE.csv:COLUMN: the source's series/slide/patient per file "
                                     "(column 'file' relative to DIR); whole groups go to one side."),
    split: list[str] = typer.Option([], help="NAME=FILE: keep the source's sides from a run's split.json or a CSV "
                                    "of path,subset (as `train --split`)."),
    cap: list[str] = typer.Option([], help="NAME=TRAIN[,VAL]: at most this many images per class on each side "
                                  "(whole numbers >= 1; seeded choice)."),
    val_share: float = typer.Option(0.25, help="Share of each class held out (by group when --groups is given)."),
    seed: int = typer.Option(0, help="Seed of the per-class choices."),
) -> None:
    """Combine several sources into one folder for `bmcell train --data OUT/data --split OUT/split.csv`; each
    source's held-out images land in OUT/heldout/<source> for `bmcell crosslab`."""
    recipe = {"source": _named(source, "--source"), "groups": _named(groups, "--groups"),
              "split": _named(split, "--split"), "cap": _named(cap, "--cap")}
    summary = combine_sources(sources_from_recipe(recipe), out, val_share, seed, recipe)
    for name, info in summary["sources"].items():
        console.print(f"{name}: {info['images']}")
    links = summary["links"]
    console.print(f"linked the images: {links['hard']} hard link(s), {links['symbolic']} symbolic link(s)"
                  + (" (these break if a source folder moves; training then refuses the folder)"
                     if links["symbolic"] else ""))
    console.print(f"wrote {out}: train with `bmcell train --data {out / 'data'} --split {out / 'split.csv'}`, "
                  f"measure with `bmcell crosslab RUN --data {out / 'heldout'}/<source>`")
