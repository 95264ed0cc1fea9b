"""Crash-safe file writes (files and whole folders) and content hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from bmcell.core.errors import BmcellError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


class DiskFullError(BmcellError):
    """A write that ran out of disk space (or quota); the file it would have replaced is as it was."""


def is_disk_full(error: BaseException) -> bool:
    """Whether an error is the disk (or the user's quota) running out of space."""
    return isinstance(error, DiskFullError) or (isinstance(error, OSError) and error.errno in NO_SPACE)


def format_bytes(count: float) -> str:
    """A byte count for people: 512 B, 4.9 MB, 1.2 GB."""
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def free_bytes(folder: Path) -> int | None:
    """Free space for this user on the disk holding folder, or None when it cannot be read."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: Path, needed: int) -> DiskFullError:
    """The error for a write of `needed` bytes to path that found no space: what, where, how much."""
    path = Path(path)
    free = free_bytes(path.parent)
    return DiskFullError(f"no space left on the disk of {path.parent} to write {path.name} "
                         f"({format_bytes(needed)} needed, {'?' if free is None else format_bytes(free)} free)")


PLAIN_NAME_LENGTH = 64  # characters at most in a name that becomes a folder name (a source, a release)


def check_plain_name(name: str, what: str, example: str) -> None:
    """Refuse a name that becomes a folder name but is not a plain one (a path such as ../x, a hidden or empty
    name): letters, digits, '_', '-' and '.', the first a letter, digit or '_'."""
    if not re.fullmatch(rf"\w[\w.-]{{0,{PLAIN_NAME_LENGTH - 1}}}", name):
        raise BmcellError(f"{what} {name!r} is not a plain folder name: use letters, digits, '_', '-' and '.', at "
                          f"most {PLAIN_NAME_LENGTH}, the first a letter, digit or '_' (e.g. {example})")


def check_folder_path(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, a folder path that is an existing file or lies under one: one line that names the
    file, instead of an OS error halfway through a command."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "" if existing == path else f": {existing}"
                raise BmcellError(f"{option} {path}{where} is a file, not a folder; give a folder")
            return


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside folder durable (a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside path, flush to disk, then rename over path. On any failure (a full
    disk included: DiskFullError) the temporary file is removed and path is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(error):
            raise disk_full(path, len(data)) from error
        raise


def replace_file(source: Path, dest: Path) -> None:
    """Rename source over dest and make the rename durable."""
    os.replace(source, dest)
    _fsync_folder(Path(dest).parent)


def atomic_write_json(path: Path, payload: dict) -> bytes:
    """Write a JSON document atomically and return the bytes written."""
    data = (json.dumps(payload, indent=2) + "\n").encode()
    atomic_write_bytes(path, data)
    return data


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    """Hex sha256 of a file, or of a folder's files (relative names, a NUL byte, contents; in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_folder(dest: Path, replace: bool = False) -> Iterator[Path]:
    """A hidden sibling folder to build dest in, moved to dest only when the block completes (a crash or an error
    leaves dest as it was). An existing dest must be empty unless replace, which swaps the old one out whole."""
    dest = Path(dest)
    staging, old = dest.with_name(f".{dest.name}.partial"), dest.with_name(f".{dest.name}.old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if dest.exists():
            if replace:
                dest.rename(old)
            else:
                dest.rmdir()  # an empty folder only: anything else is refused before the work starts
        try:
            staging.rename(dest)
        except OSError:
            if old.exists():
                old.rename(dest)  # put the previous one back
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def json_digest(payload: dict, exclude_key: str) -> str:
    """sha256 of a JSON document's canonical form (sorted keys, no whitespace) without its own digest field
    exclude_key: a document that records json_digest under exclude_key can tell when it was edited afterwards."""
    body = {key: value for key, value in payload.items() if key != exclude_key}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
