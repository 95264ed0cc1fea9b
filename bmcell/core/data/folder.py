"""Class-per-folder image datasets: find the files, apply a label map, and check every image before training."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bmcell.core.data.images import BadImageError, decode_rgb, is_image_file
from bmcell.core.data.label_maps import LabelMap
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import sha256_bytes


class DatasetError(BmcellError):
    """A dataset folder that cannot be trained or evaluated on, with what to do about it."""


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: its path relative to the data root, its target class and its content hash."""

    path: str
    label: str
    sha256: str


@dataclass(frozen=True)
class BadFile:
    """An image file that was skipped, and why."""

    path: str
    reason: str


def list_image_files(root: Path) -> list[str]:
    """Image files under each class folder of root, as sorted POSIX paths relative to root."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"data path {root} is not a folder; expected one sub-folder of images per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root} has no class sub-folders; expected e.g. {root}/neutrophil/*.jpg")
    files: list[str] = []
    empty: list[str] = []
    for class_dir in class_dirs:
        found = [
            p.relative_to(root).as_posix()
            for p in class_dir.rglob("*")
            if is_image_file(p) and p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        if not found:
            empty.append(class_dir.name)
        files.extend(found)
    if empty:
        raise DatasetError(f"class folder(s) without any image file under {root}: {', '.join(empty)}")
    return sorted(files)


def list_images_anywhere(root: Path) -> list[str]:
    """Image files anywhere under root (any layout, hidden files and folders left out), as sorted POSIX paths
    relative to root."""
    root = Path(root)
    found = (p.relative_to(root) for p in root.rglob("*") if p.is_file() and is_image_file(p))
    return sorted(path.as_posix() for path in found if not any(part.startswith(".") for part in path.parts))


def apply_label_map(files: list[str], label_map: LabelMap) -> dict[str, str]:
    """Map each file to its target class (dropping what the map drops), checking the map fits the data."""
    labelled = {f: label_map.target(f) for f in files}
    labelled = {f: label for f, label in labelled.items() if label is not None}
    used_keys = {key for f in files for key in (f.split("/", 1)[0], "/".join(label_map.source_label(f)))}
    unused = sorted(set(label_map.rules) - used_keys)
    if unused:
        raise DatasetError(
            f"label map {label_map.name!r} has rules that match no file: {unused}; check folder names and prefixes"
        )
    return labelled


def _check_one(root: Path, relpath: str) -> tuple[str, str | None, str | None]:
    """Hash and fully decode one file: (relpath, sha256 or None, reason it is bad or None)."""
    try:
        data = (root / relpath).read_bytes()
    except OSError as error:
        return relpath, None, f"unreadable ({error.strerror or error})"
    try:
        decode_rgb(data, relpath)
    except BadImageError as error:
        return relpath, None, str(error).split(": ", 1)[-1]
    return relpath, sha256_bytes(data), None


def check_images(root: Path, labelled: dict[str, str], workers: int | None = None) -> tuple[list[ImageRecord], list[BadFile]]:
    """Decode and hash every file once; return the usable records and the bad files."""
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda f: _check_one(Path(root), f), sorted(labelled)))
    good = [ImageRecord(path, labelled[path], sha) for path, sha, reason in results if reason is None]
    bad = [BadFile(path, reason) for path, _, reason in results if reason is not None]
    return good, bad


def require_trainable(records: list[ImageRecord], classes: list[str], root: Path) -> None:
    """Fail before any work when a class has no usable image or there are fewer than two classes."""
    if len(classes) < 2:
        raise DatasetError(f"{root}: found a single class {classes}; a classifier needs at least two class folders")
    counts = {c: 0 for c in classes}
    for record in records:
        counts[record.label] += 1
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(f"{root}: no usable image for class(es) {empty} (all files bad, dropped or missing)")
