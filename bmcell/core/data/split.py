"""A deterministic, stratified train/validation split that keeps byte-identical files on one side."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path, PurePosixPath, PureWindowsPath

from bmcell.core.data.folder import DatasetError, ImageRecord
from bmcell.core.fileio import atomic_write_json, sha256_bytes

SPLIT_VERSION = 1


def stratified_split(records: list[ImageRecord], val_fraction: float, seed: int) -> dict[str, str]:
    """Assign each record to 'train' or 'val', per class, grouping identical contents on one side; fails when no
    class has two different images, so that nothing could be set aside for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[record.sha256].append(record)
    by_class: dict[str, list[str]] = defaultdict(list)
    for sha, members in groups.items():
        by_class[min(m.label for m in members)].append(sha)
    assignment: dict[str, str] = {}
    for label in sorted(by_class):
        shas = sorted(by_class[label])
        random.Random(f"{seed}:{label}").shuffle(shas)
        n_val = round(len(shas) * val_fraction)
        n_val = min(max(n_val, 1), len(shas) - 1) if len(shas) > 1 else 0
        for index, sha in enumerate(shas):
            for member in groups[sha]:
                assignment[member.path] = "val" if index < n_val else "train"
    if records and "val" not in assignment.values():
        raise DatasetError(f"no image can be set aside for validation: the {len(records)} usable images hold only "
                           f"{len(groups)} different picture(s), and byte-identical files always stay on one side of "
                           "the split, so a class needs at least 2 different images; add different images (or "
                           "remove the copies), or give --split")
    return assignment


SUBSETS = ("train", "val")


def _assignment(entries: list[tuple[str, str, str]], source: Path) -> dict[str, str]:
    """path -> subset from (path, subset, where it is listed) entries. A path listed twice with different subsets is
    an error naming both places; listed twice with the same subset, it is taken once."""
    assignment: dict[str, str] = {}
    first: dict[str, str] = {}
    conflicts = []
    for path, subset, where in entries:
        if path in assignment and assignment[path] != subset:
            conflicts.append(f"{path!r} is '{assignment[path]}' on {first[path]} and '{subset}' on {where}")
            continue
        assignment.setdefault(path, subset)
        first.setdefault(path, where)
    if conflicts:
        raise DatasetError(f"{source} lists {len(conflicts)} path(s) on both sides: " + "; ".join(conflicts[:5])
                           + ("; ..." if len(conflicts) > 5 else "") + ". List each image once, in one subset")
    return assignment


def _read_assignment_csv(path: Path) -> dict[str, str]:
    """path -> subset from a CSV file with (at least) the columns path and subset."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, restval="")
        if not {"path", "subset"} <= set(reader.fieldnames or ()):
            raise DatasetError(f"{path}: a split CSV needs the columns path,subset (found {reader.fieldnames})")
        entries = [(row["path"].strip(), row["subset"].strip(), f"line {reader.line_num}") for row in reader]
    return _assignment(entries, path)


def read_assignment(path: Path) -> dict[str, str]:
    """path -> 'train'/'val' from another run's split.json or from a CSV with columns path,subset."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file {path} not found")
    if path.suffix.lower() == ".csv":
        try:
            assignment = _read_assignment_csv(path)
        except (UnicodeDecodeError, csv.Error):
            raise DatasetError(f"{path}: not a CSV file of UTF-8 text; save it as CSV (UTF-8) with columns "
                               "path,subset") from None
    else:
        try:
            files = read_split(path)["files"]
            entries = [(f["path"], f["subset"], f"file entry {i + 1}") for i, f in enumerate(files)]
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError):
            raise DatasetError(f"{path}: not a bmcell split.json; give one, or a CSV with columns path,subset") from None
        assignment = _assignment(entries, path)
    odd = sorted({subset for subset in assignment.values() if subset not in SUBSETS})
    if odd:
        raise DatasetError(f"{path}: subsets must be 'train' or 'val', found {odd}")
    return assignment


def _outside(path: str) -> bool:
    """True for a split-file path that is absolute or climbs out of the data folder."""
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() \
        or ".." in PurePosixPath(path.replace("\\", "/")).parts


def given_split(records: list[ImageRecord], assignment: dict[str, str], source: Path) -> tuple[dict[str, str], list[str]]:
    """The given assignment restricted to the usable records, with warnings; fails when it does not cover them."""
    unassigned = sorted(r.path for r in records if r.path not in assignment)
    if unassigned:
        raise DatasetError(f"{len(unassigned)} image(s) of the data are not in the split file {source} "
                           f"(e.g. {unassigned[:3]}); add them to it or remove them from the data folder")
    chosen = {r.path: assignment[r.path] for r in records}
    if "val" not in chosen.values() or "train" not in chosen.values():
        raise DatasetError(f"the split file {source} leaves no image of this data on one side (train or val)")
    sides: dict[str, set[str]] = defaultdict(set)
    for record in records:
        sides[record.sha256].add(chosen[record.path])
    straddling = sum(len(s) > 1 for s in sides.values())
    warnings = [f"the split file {source} puts {straddling} set(s) of byte-identical images on both sides"] \
        if straddling else []
    unused = sorted(set(assignment) - set(chosen))
    outside = [path for path in unused if _outside(path)]
    if outside:
        warnings.append(f"the split file {source} lists {len(outside)} path(s) outside the data folder, ignored: "
                        + ", ".join(repr(path) for path in outside[:5]) + (", ..." if len(outside) > 5 else ""))
    missing = [path for path in unused if not _outside(path)]
    if missing:
        warnings.append(f"{len(missing)} file(s) of the split file {source} are not usable images of this data "
                        "(not in the folder, or unusable and named in the warning above); ignored")
    return chosen, warnings


def write_split(path: Path, records: list[ImageRecord], assignment: dict[str, str], seed: int,
                val_fraction: float, classes: list[str], label_map: dict) -> str:
    """Write the split as JSON (atomically) and return the file's sha256."""
    payload = {
        "version": SPLIT_VERSION,
        "seed": seed,
        "val_fraction": val_fraction,
        "classes": classes,
        "label_map": label_map,
        "files": [{"path": r.path, "label": r.label, "sha256": r.sha256, "subset": assignment[r.path]}
                  for r in sorted(records, key=lambda r: r.path)],
    }
    return sha256_bytes(atomic_write_json(path, payload))


def read_split(path: Path, expected_sha256: str | None = None) -> dict:
    """Read a split file, checking its hash against the checkpoint's record when given."""
    if not path.is_file():
        raise DatasetError(f"split file {path} not found; it is written beside the checkpoint by `bmcell train`")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise DatasetError(f"{path} does not match the split this checkpoint was trained with (sha256 differs)")
    payload = json.loads(data)
    if payload.get("version") != SPLIT_VERSION:
        raise DatasetError(f"{path}: unsupported split version {payload.get('version')}")
    payload["sha256"] = sha256_bytes(data)
    return payload


def subset_records(split: dict, subset: str) -> list[ImageRecord]:
    """The records of one side ('train' or 'val') of a split."""
    return [ImageRecord(f["path"], f["label"], f["sha256"]) for f in split["files"] if f["subset"] == subset]
