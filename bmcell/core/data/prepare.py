"""From a data folder to checked train/validation records: the split is made once and then read back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bmcell.core.data.folder import (
    BadFile,
    DatasetError,
    ImageRecord,
    apply_label_map,
    check_images,
    list_image_files,
    require_trainable,
)
from bmcell.core.data.label_maps import LabelMap
from bmcell.core.data.split import (
    given_split,
    read_assignment,
    read_split,
    stratified_split,
    subset_records,
    write_split,
)

SPLIT_FILE = "split.json"
BAD_FILES = "bad_files.txt"
MAX_NAMED_BAD_FILES = 20


@dataclass(frozen=True)
class PreparedData:
    """The classes and the records on each side of the split, with the split file's hash."""

    root: Path
    classes: list[str]
    train: list[ImageRecord]
    val: list[ImageRecord]
    label_map: LabelMap
    split_sha256: str


def describe_bad_files(bad: list[BadFile], listing: Path | None) -> str:
    """One message naming the unusable files (the first few, with the full list in a file)."""
    named = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:MAX_NAMED_BAD_FILES])
    more = len(bad) - MAX_NAMED_BAD_FILES
    tail = f"\n  ... and {more} more" if more > 0 else ""
    where = f"; full list in {listing}" if listing else ""
    return f"{len(bad)} unusable image file(s){where}:\n{named}{tail}"


def scan_folder(root: Path, label_map: LabelMap, strict: bool,
                warn: Callable[[str], None], listing: Path | None = None) -> tuple[list[ImageRecord], list[str]]:
    """List, label and fully check every image; warn once about bad files (or fail when strict)."""
    labelled = apply_label_map(list_image_files(root), label_map)
    if not labelled:
        raise DatasetError(f"label map {label_map.name!r} drops every image of {root} (its rules map them all to "
                           "null); map at least two class folders to a class")
    records, bad = check_images(root, labelled)
    if bad:
        if listing is not None:
            listing.write_text("".join(f"{b.path}\t{b.reason}\n" for b in bad), encoding="utf-8")
        message = describe_bad_files(bad, listing)
        if strict:
            raise DatasetError(f"--strict: {message}\nfix or remove them, or drop --strict to skip them")
        warn(f"skipping {message}")
    classes = label_map.class_order({r.label for r in records} | set(labelled.values()))
    require_trainable(records, classes, root)
    return records, classes


def prepare_data(root: Path, label_map: LabelMap, run_dir: Path, seed: int, val_fraction: float,
                 strict: bool, warn: Callable[[str], None], split_file: Path | None = None) -> PreparedData:
    """Check the folder, split it (or take the split_file's assignment by path) and write split.json into the run
    folder."""
    assigned = read_assignment(split_file) if split_file else None  # a bad split file fails before the long scan
    records, classes = scan_folder(root, label_map, strict, warn, Path(run_dir) / BAD_FILES)
    if assigned is None:
        assignment = stratified_split(records, val_fraction, seed)
    else:
        assignment, warnings = given_split(records, assigned, split_file)
        for message in warnings:
            warn(message)
    sha = write_split(Path(run_dir) / SPLIT_FILE, records, assignment, seed, val_fraction, classes,
                      label_map.to_dict())
    train = [r for r in records if assignment[r.path] == "train"]
    val = [r for r in records if assignment[r.path] == "val"]
    return PreparedData(Path(root), classes, train, val, label_map, sha)


def load_prepared(root: Path, run_dir: Path, expected_sha256: str | None = None) -> PreparedData:
    """The records of an existing split file, checking that its files are still under root."""
    split = read_split(Path(run_dir) / SPLIT_FILE, expected_sha256)
    missing = [f["path"] for f in split["files"] if not (Path(root) / f["path"]).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} file(s) of the saved split are missing under {root} (e.g. {missing[:3]}); "
            "point --data at the folder the run was trained on"
        )
    return PreparedData(Path(root), list(split["classes"]), subset_records(split, "train"),
                        subset_records(split, "val"), LabelMap.from_dict(split["label_map"]), split["sha256"])


def class_counts(records: list[ImageRecord], classes: list[str]) -> dict[str, int]:
    """Images per class, in class order."""
    counts = Counter(r.label for r in records)
    return {c: counts.get(c, 0) for c in classes}
