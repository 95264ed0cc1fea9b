"""`bmcell export`: checkpoint → calibration and golden sets → every selected artefact → manifest → parity."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import bmcell
from bmcell.core.checkpoint import Checkpoint
from bmcell.core.device import select_device
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import staged_folder
from export.formats.base import ExportFormat, ExportInputs
from export.golden import GOLDEN, reference_logits, reference_outputs, write_golden
from export.manifest import (
    MANIFEST,
    artefact_entry,
    build_manifest,
    confidence_contract,
    lab_check_contract,
    novelty_contract,
    write_manifest,
)
from export.samples import ExportImages, load_unit_images
from export.wrapper import NormalizedClassifier


def folded_model(checkpoint: Checkpoint) -> NormalizedClassifier:
    """The network with its normalisation folded in front: what every artefact contains."""
    return NormalizedClassifier(checkpoint.scored_model(), checkpoint.mean, checkpoint.std).eval()


def embedded_metadata(checkpoint: Checkpoint) -> dict[str, str]:
    """Flat string metadata that formats embed: labels, preprocessing and provenance."""
    return {
        "classes": json.dumps(checkpoint.classes), "image_size": str(checkpoint.image_size),
        "mean": json.dumps(checkpoint.mean), "std": json.dumps(checkpoint.std),
        "input": "image: 1x3xHxW float32 RGB in [0, 1], normalisation inside the model; output: logits" +
                 (", then novelty" if checkpoint.novelty else ""),
        "novelty": json.dumps(novelty_contract(checkpoint)),
        "arch": checkpoint.arch, "source_weights_sha256": checkpoint.weights_sha256,
        "bmcell_version": bmcell.__version__, "description": f"bmcell {checkpoint.arch} white-cell classifier",
        "license": "Apache-2.0 (code); the weights follow the licence of the data they were trained on",
        "input_norm": checkpoint.input_norm, "confidence": json.dumps(confidence_contract(checkpoint)),
    }


def validation_set(checkpoint: Checkpoint, images: ExportImages) -> tuple[np.ndarray, np.ndarray, float]:
    """The validation images as [0, 1] inputs and targets, with the float reference's accuracy on them."""
    inputs = load_unit_images(images.root, images.validation, checkpoint.image_size)
    targets = np.array([checkpoint.classes.index(r.label) for r in images.validation])
    reference = reference_logits(checkpoint, inputs, select_device("auto"))
    return inputs.numpy(), targets, float(np.mean(reference.argmax(1) == targets))


def _export_one(fmt: ExportFormat, inputs: ExportInputs, staging: Path, image_size: int,
                log: Callable[[str], None]) -> dict:
    """Export one format into the staging folder and return its manifest entry."""
    path = staging / fmt.filename()
    start = time.perf_counter()
    try:
        fmt.export(inputs, path)
    except BmcellError:
        raise
    except Exception as error:  # a converter's own failure: name the format, keep the cause
        raise BmcellError(f"export to {fmt.name} failed: {type(error).__name__}: {error}") from error
    inputs.exported[fmt.name] = path
    entry = artefact_entry(fmt, path, image_size, inputs.classes, time.perf_counter() - start, inputs.novelty)
    log(f"  {fmt.name:<18} {entry['bytes'] / 1e6:8.2f} MB  {entry['export_seconds']:6.1f} s  {path.name}")
    return entry


def export_checkpoint(checkpoint: Checkpoint, formats: list[ExportFormat], out: Path, images: ExportImages,
                      log: Callable[[str], None] = print) -> Path:
    """Write every format, the golden set and manifest.json into out (built aside, moved in when complete)."""
    if not formats:
        raise BmcellError("no format selected: check --target and --quantize")
    if out.exists() and any(out.iterdir()):
        raise BmcellError(f"{out} exists and is not empty; choose another --out or remove it")
    image_size = checkpoint.image_size
    golden_inputs = load_unit_images(images.root, images.golden, image_size)
    inputs = ExportInputs(model=folded_model(checkpoint), example=golden_inputs[:1],
                          calibration=load_unit_images(images.root, images.calibration, image_size),
                          classes=checkpoint.classes, metadata=embedded_metadata(checkpoint),
                          temperature=checkpoint.confidence.temperature if checkpoint.confidence else 1.0,
                          novelty=checkpoint.novelty is not None, views=checkpoint.views)
    with staged_folder(out) as staging:
        device = select_device("auto")
        golden_outputs = reference_outputs(checkpoint, golden_inputs, device)
        golden_logits = golden_outputs[:, :len(checkpoint.classes)]
        golden = write_golden(staging / GOLDEN, golden_inputs, golden_outputs, len(checkpoint.classes),
                              [r.path for r in images.golden], checkpoint.weights_sha256, device)
        log(f"images from {images.origin}: golden set {len(images.golden)} (reference logits on {golden['device']}, "
            f"TF32 off), int8 calibration {len(images.calibration)}")
        with torch.no_grad():
            artefacts = [_export_one(fmt, inputs, staging, image_size, log) for fmt in formats]
        targets = np.array([checkpoint.classes.index(r.label) for r in images.golden])
        write_manifest(staging / MANIFEST, build_manifest(checkpoint, artefacts, golden,
                                                          lab_check_contract(checkpoint, golden_logits, targets)))
    return out / MANIFEST
