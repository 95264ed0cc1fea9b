"""Parity of an export folder against its checkpoint, the step `bmcell export` and `bmcell parity` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bmcell.core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from export.manifest import read_manifest
from export.parity import PARITY_MD, run_parity
from export.pipeline import validation_set
from export.samples import ExportImages


def source_checkpoint(export_dir: Path, checkpoint: Path | None) -> Checkpoint:
    """The checkpoint an export folder was made from (or the one given), refusing one with other weights."""
    manifest = read_manifest(export_dir)
    loaded = load_checkpoint(checkpoint or Path(manifest["source_checkpoint"]["path"]))
    if loaded.weights_sha256 != manifest["source_checkpoint"]["weights_sha256"]:
        raise CheckpointError(f"{loaded.json_path} is not the checkpoint {export_dir} was exported from "
                              "(weights differ)")
    return loaded


def verify_export(export_dir: Path, checkpoint: Checkpoint | None, images: ExportImages | None,
                  say: Callable[[str], None]) -> dict:
    """Parity of every artefact on the golden set and, given the checkpoint and its images, validation accuracy."""
    validation = None
    if checkpoint is not None and images is not None:
        say(f"reference accuracy on {len(images.validation)} validation images ...")
        validation = validation_set(checkpoint, images)
    report = run_parity(export_dir, validation, say)
    say(f"report: {export_dir / PARITY_MD}")
    return report
