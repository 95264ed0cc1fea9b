"""Crash-safe file writes (files and whole folders) and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file beside path, flush to disk, then rename over path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
