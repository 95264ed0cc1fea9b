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


def _images_under(folder: Path, root: Path) -> tuple[list[str], list[Path]]:
    """Image files anywhere under folder (hidden files and folders left out), as POSIX paths relative to root, and
    the broken links there that carry an image's name (their target moved or was deleted)."""
    found, broken = [], []
    for path in folder.rglob("*"):
        relative = path.relative_to(root)
        if not is_image_file(path) or any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file():
            found.append(relative.as_posix())
        elif path.is_symlink() and not path.exists():
            broken.append(path)
    return found, broken


def _refuse_broken_links(root: Path, broken: list[Path]) -> None:
    """Fail, naming how many and one, when image links under root point to files that no longer exist: training or
    measuring on the rest would quietly use part of the data."""
    if broken:
        first = min(broken)
        raise DatasetError(f"{len(broken)} image link(s) under {root} point to files that no longer exist (e.g. "
                           f"{first} -> {os.readlink(first)}); their source folder moved or was deleted: "
                           "restore it, rebuild the folder (e.g. `bmcell combine` again) or delete the broken links")


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
    found = {class_dir.name: _images_under(class_dir, root) for class_dir in class_dirs}
    _refuse_broken_links(root, [link for _, broken in found.values() for link in broken])
    empty = [name for name, (files, _) in found.items() if not files]
    if empty:
        raise DatasetError(f"class folder(s) without any image file under {root}: {', '.join(empty)}")
    return sorted(path for files, _ in found.values() for path in files)


def list_images_anywhere(root: Path) -> list[str]:
    """Image files anywhere under root (any layout, hidden files and folders left out), as sorted POSIX paths
    relative to root; broken image links are an error."""
    files, broken = _images_under(Path(root), Path(root))
    _refuse_broken_links(Path(root), broken)
    return sorted(files)


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
