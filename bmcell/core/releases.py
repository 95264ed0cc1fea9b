"""What marks a released model's folder: read-only evidence that no command writes into after `bmcell release`."""

from __future__ import annotations

from pathlib import Path

from bmcell.core.errors import BmcellError

RELEASE_FILE = "release.json"  # in every folder `bmcell release` writes


def release_folder(path: Path, models_dir: Path) -> Path | None:
    """The released model's folder that path is or lies inside (a folder holding release.json, or any folder in
    models_dir), or None."""
    path, models_dir = Path(path).resolve(), Path(models_dir).resolve()
    for folder in (path, *path.parents):
        if (folder / RELEASE_FILE).is_file() or folder.parent == models_dir:
            return folder
    return None


def refuse_out_inside_release(out: Path, models_dir: Path) -> None:
    """Refuse an --out inside a released model's folder, before any work."""
    inside = release_folder(out, models_dir)
    if inside is not None:
        raise BmcellError(f"--out {out} is inside the released model {inside}, whose files are its release's "
                          "evidence and are never rewritten; pass --out DIR outside it")
