"""Several sources (labs, microscopes) as one training folder: class folders of links tagged by source, a split CSV
that keeps each source's series, slides or patients on one side, and per source a folder of its held-out images for
`bmcell crosslab`."""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bmcell.core.data.folder import DatasetError, list_image_files
from bmcell.core.data.split import read_assignment
from bmcell.core.fileio import check_plain_name

SOURCES_FILE = "sources.json"
SPLIT_CSV = "split.csv"
SIDES = ("train", "val")


@dataclass
class Source:
    """One source: its class-per-folder root, optionally its groups (file → series/slide/patient id), a split to
    reuse (file → train/val), and caps on images per class and side."""

    name: str
    root: Path
    groups: dict[str, str] | None = None
    split: dict[str, str] | None = None
    cap: dict[str, int] = field(default_factory=dict)  # side → most images per class on that side

    def __post_init__(self) -> None:
        """A name becomes a folder name under data/<class>/ and heldout/: a plain name, never a path."""
        check_plain_name(self.name, "source name", "chula or lab_2")


def read_groups(spec: str) -> dict[str, str]:
    """CSV:COLUMN (the CSV's 'file' column holds paths relative to the source) → file → group id."""
    path, _, column = spec.rpartition(":")
    if not path or not column:
        raise DatasetError(f"--groups {spec!r}: expected NAME=FILE.csv:COLUMN, "
                           "e.g. chula=labels.csv:slide_or_series_id")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: reads spreadsheets' "CSV UTF-8" (a BOM)
            rows = list(csv.DictReader(handle, restval=""))
    except OSError as error:
        raise DatasetError(f"--groups {path}: cannot read it ({error.strerror or error})") from None
    except (UnicodeDecodeError, csv.Error):
        raise DatasetError(f"--groups {path}: not a CSV file of UTF-8 text; save it as CSV (UTF-8)") from None
    if not rows or "file" not in rows[0] or column not in rows[0]:
        raise DatasetError(f"--groups {path}: needs columns 'file' and {column!r}; "
                           f"it has {list(rows[0]) if rows else []}")
    blank = [i + 2 for i, row in enumerate(rows) if not row["file"] or not row[column]]
    if blank:
        raise DatasetError(f"--groups {path}: {len(blank)} row(s) without a file or a {column!r} value "
                           f"(e.g. line(s) {blank[:3]})")
    return {row["file"]: row[column] for row in rows}


def parse_cap(name: str, text: str) -> dict[str, int]:
    """'TRAIN[,VAL]' → side → most images per class on that side: whole numbers of at least 1."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > len(SIDES) or not all(re.fullmatch(r"[0-9]+", part) and int(part) > 0 for part in parts):
        raise DatasetError(f"--cap {name}={text}: expected TRAIN or TRAIN,VAL, whole numbers of at least 1 (the most "
                           f"images per class on each side), e.g. {name}=200,50")
    return dict(zip(SIDES, map(int, parts)))


def sources_from_recipe(recipe: dict[str, dict[str, str]]) -> list[Source]:
    """The sources `bmcell combine` options name (and sources.json's recipe records): NAME → DIR under "source",
    NAME → FILE.csv:COLUMN under "groups", NAME → a split file as `train --split` takes (split.json, or a CSV of
    path,subset) under "split", NAME → "TRAIN[,VAL]" under "cap"."""
    roots = recipe["source"]
    unknown = sorted((set(recipe["groups"]) | set(recipe["split"]) | set(recipe["cap"])) - set(roots))
    if unknown:
        raise DatasetError(f"--groups/--split/--cap name sources that no --source gives: {unknown}")
    sources = []
    for name, root in roots.items():
        cap = parse_cap(name, recipe["cap"][name]) if name in recipe["cap"] else {}
        groups, split = recipe["groups"].get(name), recipe["split"].get(name)
        sources.append(Source(name, Path(root), read_groups(groups) if groups else None,
                              read_assignment(Path(split)) if split else None, cap))
    return sources


def held_out_groups(files: dict[str, str], groups: dict[str, str], share: float) -> set[str]:
    """Per class, its smallest groups until they hold at least `share` of the class, skipping any group that would
    take more than half of it; a group belongs to the class of most of its files."""
    members: dict[str, Counter] = defaultdict(Counter)
    for path, label in files.items():
        members[groups[path]][label] += 1
    by_class: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for group, labels in members.items():
        by_class[labels.most_common(1)[0][0]].append((sum(labels.values()), group))
    totals = Counter(files.values())
    held: set[str] = set()
    for label, candidates in by_class.items():
        count = 0
        for size, group in sorted(candidates):
            if count >= share * totals[label]:
                break
            if count + size > totals[label] / 2:
                continue
            held.add(group)
            count += size
    return held


def source_sides(source: Source, files: dict[str, str], val_share: float, seed: int) -> dict[str, str]:
    """file → train/val: the source's own split, else whole groups held out, else a seeded per-class share."""
    if source.split is not None:
        missing = sorted(set(files) - set(source.split))
        if missing:
            raise DatasetError(f"source {source.name}: {len(missing)} file(s) are not in its split "
                               f"(e.g. {missing[:3]})")
        return {path: source.split[path] for path in files}
    if source.groups is not None:
        missing = sorted(set(files) - set(source.groups))
        if missing:
            raise DatasetError(f"source {source.name}: {len(missing)} file(s) have no group id (e.g. {missing[:3]})")
        held = held_out_groups(files, source.groups, val_share)
        return {path: "val" if source.groups[path] in held else "train" for path in files}
    sides = {}
    by_class: dict[str, list[str]] = defaultdict(list)
    for path, label in sorted(files.items()):
        by_class[label].append(path)
    for label, paths in by_class.items():
        random.Random(f"{seed}:{source.name}:{label}").shuffle(paths)
        n_val = max(1, round(val_share * len(paths)))
        sides.update({path: "val" if i < n_val else "train" for i, path in enumerate(paths)})
    return sides


def _link_all(links: dict[Path, Path]) -> dict[str, int]:
    """Each link → its target: a hard link where the file system allows it (same file system), else a symbolic
    link (parents made); returns how many of each."""
    made: Counter = Counter()
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(target.resolve(), link)
            made["hard"] += 1
        except OSError:  # another file system, or one without hard links
            link.symlink_to(target.resolve())
            made["symbolic"] += 1
    return {kind: made[kind] for kind in ("hard", "symbolic")}


def combine_sources(sources: list[Source], out: Path, val_share: float = 0.25, seed: int = 0,
                    recipe: dict | None = None) -> dict:
    """Write out/data/<class>/<source>/..., out/split.csv, out/heldout/<source>/<class>/... (every held-out file of
    the source, before any cap; links, see _link_all) and out/sources.json (with `recipe`, the options that made it);
    returns the summary written there. Nothing is written when a check fails."""
    if not sources:
        raise DatasetError("give at least one --source NAME=DIR")
    names = Counter(s.name.casefold() for s in sources)
    same = sorted(s.name for s in sources if names[s.name.casefold()] > 1)
    if same:
        raise DatasetError(f"--source names {same} differ only in case; they would share a folder on macOS and "
                           "Windows: give each source a distinct NAME")
    by_folder: dict[Path, list[str]] = defaultdict(list)
    for source in sources:
        by_folder[Path(source.root).resolve()].append(source.name)
    twice = next((names for names in by_folder.values() if len(names) > 1), None)
    if twice:
        raise DatasetError(f"--source {' and '.join(twice)} name the same folder; its images would be counted as "
                           "two labs (and the same image could land on both sides of the split): give it once")
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists; combine writes a new folder")
    if not 0 < val_share < 1:
        raise DatasetError(f"--val-share must be between 0 and 1, got {val_share}")
    links: dict[Path, Path] = {}
    rows, summary = [], {"val_share": val_share, "seed": seed, "recipe": recipe, "sources": {}}
    for source in sources:
        files = {path: path.split("/", 1)[0] for path in list_image_files(source.root)}
        sides = source_sides(source, files, val_share, seed)
        counts: Counter = Counter()
        for (label, side), paths in sorted(_by_class_and_side(files, sides).items()):
            if side == "val":
                links.update({out / "heldout" / source.name / p: source.root / p for p in paths})
            chosen = sorted(paths)
            if side in source.cap:
                random.Random(f"{seed}:{label}:{side}").shuffle(chosen)
                chosen = chosen[:source.cap[side]]
            for path in chosen:
                name = f"{label}/{source.name}/{path.split('/', 1)[1]}"
                links[out / "data" / name] = source.root / path
                rows.append((name, side))
                counts[f"{label}/{side}"] += 1
        summary["sources"][source.name] = {"root": str(source.root), "grouped": source.groups is not None,
                                           "own_split": source.split is not None, "cap": source.cap,
                                           "images": dict(sorted(counts.items()))}
    empty = [side for side in SIDES if side not in {subset for _, subset in rows}]
    if empty:
        raise DatasetError(f"the combined split would have no {empty[0]} image; check the sources' --split files")
    summary["links"] = _link_all(links)
    with open(out / SPLIT_CSV, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "subset"), *rows])
    (out / SOURCES_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _by_class_and_side(files: dict[str, str], sides: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Files grouped by (class, side)."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path, label in files.items():
        grouped[label, sides[path]].append(path)
    return grouped


def record_sources(root: Path, paths: list[str]) -> list[str]:
    """The source of each path of a `bmcell combine` folder (root is its data/: paths are class/source/...)."""
    summary_file = Path(root).parent / SOURCES_FILE
    if not summary_file.is_file():
        raise DatasetError(f"--balance-sources needs a folder made by `bmcell combine` (no {summary_file})")
    names = set(json.loads(summary_file.read_text(encoding="utf-8"))["sources"])
    sources = [path.split("/")[1] if path.count("/") >= 2 else "" for path in paths]
    stray = sorted({p for p, s in zip(paths, sources) if s not in names})
    if stray:
        raise DatasetError(f"{len(stray)} file(s) under {root} are not in a source of {summary_file} "
                           f"(e.g. {stray[:3]})")
    return sources
