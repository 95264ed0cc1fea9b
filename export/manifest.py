"""manifest.json: what was exported, from which checkpoint, with which tools, and how to feed it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.data.prepare import SPLIT_FILE
from bmcell.core.data.sources import SOURCES_FILE
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import atomic_write_json, json_digest, sha256_path
from bmcell.core.novelty import RULE, THRESHOLD, UNKNOWN_TEXT
from bmcell.core.shift import MIN_CHECK_IMAGES, fit_atc
from bmcell.core.versions import installed_versions
from export.formats.base import ExportFormat

MANIFEST = "manifest.json"
NOVELTY_OUTPUT = "novelty"  # Core ML's output beside the class label and probabilities
DIGEST_KEY = "manifest_sha256"  # sha256 of the manifest's canonical JSON without this key (fileio.json_digest)
FORMAT = "bmcell-export"
FORMAT_VERSION = 1
TOOLS = ("bmcell", "torch", "torchvision", "timm", "executorch", "torchao", "onnx", "onnxruntime", "onnxscript",
         "coremltools")
PREPROCESSING = ("decode to 8-bit RGB; resize the shorter side to image_size (bilinear, antialiased); centre-crop "
                 "image_size x image_size; scale uint8 by 1/255 to float32 [0, 1]; NCHW; no mean/std: "
                 "normalisation is inside the model")
DECODE = "8-bit RGB, EXIF orientation applied, alpha composited on white"


class ManifestError(BmcellError):
    """An export folder whose manifest or artefacts do not check out."""


def size_bytes(path: Path) -> int:
    """Bytes of a file, or of all files in a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def input_contract(fmt: ExportFormat, image_size: int) -> dict:
    """How to feed one artefact."""
    if fmt.input_kind == "image":
        return {"name": "image", "kind": "RGB image", "width": image_size, "height": image_size,
                "preprocessing": "resize the shorter side to image_size and centre-crop; scaling is in the model"}
    return {"name": "image", "kind": "tensor", "shape": [1, 3, image_size, image_size], "dtype": "float32",
            "range": [0.0, 1.0], "layout": "NCHW", "channels": "RGB", "preprocessing": PREPROCESSING}


def preprocessing_contract(image_size: int) -> dict:
    """PREPROCESSING as data for apps to follow (bmcell.core.data.transforms.unit_transform on load_rgb's output)."""
    return {"decode": DECODE, "resize_shorter_side_to": image_size, "interpolation": "bilinear", "antialias": True,
            "center_crop": image_size, "scale": 1 / 255, "mean": None, "std": None}


CONFIDENCE_RULE = ("probabilities = softmax(logits / temperature); answer the top class only when its probability "
                   ">= threshold, otherwise 'uncertain - check by eye'; an answer below confident_from is shown as "
                   "low confidence")


def confidence_contract(checkpoint: Checkpoint) -> dict | None:
    """The calibrated temperature and abstention threshold as apps apply them, or None for a checkpoint without."""
    confidence = checkpoint.confidence
    if confidence is None:
        return None
    return {"temperature": confidence.temperature, "threshold": confidence.threshold,
            "confident_from": (1 + confidence.threshold) / 2, "coverage_target": confidence.coverage_target,
            "fitted_on": confidence.fitted_on, "rule": CONFIDENCE_RULE}


def novelty_contract(checkpoint: Checkpoint) -> dict | None:
    """Where an artefact gives the per-image novelty and when it flags a picture, or None for a model without."""
    novelty = checkpoint.novelty
    if novelty is None:
        return None
    return {"threshold": THRESHOLD, "output_index": len(checkpoint.classes), "coreml_output": NOVELTY_OUTPUT,
            "flagged_on_validation": novelty.flagged_on_validation, "bank_images": int(novelty.bank.shape[0]),
            "answer": UNKNOWN_TEXT, "rule": RULE}


def lab_check_contract(checkpoint: Checkpoint, logits: np.ndarray, targets: np.ndarray) -> dict:
    """What an app needs to estimate its accuracy on a batch of a lab's photos from confidence alone (ATC, as
    `bmcell check` does without the distance to the training data): the threshold fitted on the golden set's
    reference answers, their accuracy, and the fewest photos worth an estimate."""
    threshold, accuracy = fit_atc(checkpoint.confidence, logits, targets)
    return {"threshold": threshold, "validation_accuracy": accuracy, "images": int(len(targets)),
            "min_images": MIN_CHECK_IMAGES}


def labs_seen(checkpoint: Checkpoint) -> list[dict]:
    """The image sets the model was trained on, with their training-side cell counts: each source of a `bmcell
    combine` folder (its sources.json beside the release or the data folder), else the one training folder (by
    name when the checkpoint records it)."""
    data = checkpoint.recorded_data_folder()
    for folder in (checkpoint.run_dir, data.parent if data else None):
        if folder is not None and (folder / SOURCES_FILE).is_file():
            sources = json.loads((folder / SOURCES_FILE).read_text(encoding="utf-8"))["sources"]
            return [{"name": name, "cells": sum(n for part, n in source["images"].items() if part.endswith("/train"))}
                    for name, source in sources.items()]
    split = checkpoint.run_dir / SPLIT_FILE
    cells = sum(1 for f in json.loads(split.read_text(encoding="utf-8"))["files"] if f.get("subset") == "train") \
        if split.is_file() else None
    named = checkpoint.meta.get("data") or checkpoint.config.get("data")
    return [{"name": Path(named).name if named else "its training images", "cells": cells}]


def artefact_entry(fmt: ExportFormat, path: Path, image_size: int, classes: list[str], seconds: float,
                   novelty: bool = False) -> dict:
    """The manifest record of one exported artefact (its output: the classes' values, then novelty when it has it)."""
    return {"name": fmt.name, "file": path.name, "family": fmt.family, "precision": fmt.precision,
            "runtime": fmt.runtime, "bytes": size_bytes(path), "sha256": sha256_path(path),
            "input": input_contract(fmt, image_size),
            "output": {"name": fmt.output_kind, "shape": [1, len(classes) + novelty], "classes": classes,
                       "novelty_index": len(classes) if novelty else None},
            "export_seconds": round(seconds, 2)}


def build_manifest(checkpoint: Checkpoint, artefacts: list[dict], golden: dict, lab_check: dict | None = None) -> dict:
    """The whole manifest: model facts, the labs it has seen, source checkpoint, tools, golden set and artefacts."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arch": checkpoint.arch, "classes": checkpoint.classes, "image_size": checkpoint.image_size,
        "mean": checkpoint.mean, "std": checkpoint.std, "preprocessing": PREPROCESSING,
        "preprocessing_contract": preprocessing_contract(checkpoint.image_size),
        "input_norm": checkpoint.input_norm, "confidence": confidence_contract(checkpoint),
        "novelty": novelty_contract(checkpoint),
        "adapted_on": checkpoint.adapted_on, "finetuned_on": checkpoint.finetuned_on, "labs": labs_seen(checkpoint),
        "lab_check": lab_check,
        "source_checkpoint": {"path": str(checkpoint.json_path), "weights_sha256": checkpoint.weights_sha256,
                              "epoch": checkpoint.epoch, "metrics": {k: checkpoint.metrics.get(k) for k in
                                                                       ("accuracy", "balanced_accuracy", "macro_f1")}},
        "tool_versions": installed_versions(TOOLS), "golden": golden, "artefacts": artefacts,
    }


def write_manifest(path: Path, manifest: dict) -> None:
    """Write manifest.json atomically with the digest of its own content under DIGEST_KEY."""
    atomic_write_json(path, manifest | {DIGEST_KEY: json_digest(manifest, DIGEST_KEY)})


def read_manifest(export_dir: Path) -> dict:
    """Read and validate an export folder's manifest, refusing one edited after export (its digest no longer
    matches) or one written before manifests carried a digest."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{export_dir} has no {MANIFEST}; is it a folder written by `bmcell export`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    if DIGEST_KEY not in manifest:
        raise ManifestError(f"{path} has no {DIGEST_KEY}: it was written by an older bmcell, whose manifests could "
                            "not be checked for edits; export the checkpoint again")
    if manifest[DIGEST_KEY] != json_digest(manifest, DIGEST_KEY):
        raise ManifestError(f"{path} was edited after export (its {DIGEST_KEY} does not match its content): the "
                            "input contract, classes or checksums it states can no longer be trusted; restore it or "
                            "export the checkpoint again")
    missing = [k for k in ("classes", "image_size", "source_checkpoint", "golden", "artefacts") if k not in manifest]
    if missing:
        raise ManifestError(f"{path}: lacks {missing}")
    return manifest


def verify_file(export_dir: Path, file: str, sha256: str, what: str,
                consequence: str = "it changed after export; re-export it") -> Path:
    """export_dir/file, after checking it exists and still has the sha256 the manifest records; errors name it."""
    path = Path(export_dir) / file
    if not path.exists():
        raise ManifestError(f"{what}: {path} is missing")
    actual = sha256_path(path)
    if actual != sha256:
        raise ManifestError(f"{what}: {path.name} does not match its sha256 in the manifest "
                            f"({actual[:12]}... != {sha256[:12]}...): {consequence}")
    return path


def verify_artefact(export_dir: Path, entry: dict) -> Path:
    """The artefact's path, after checking it exists and still has the manifest's sha256."""
    return verify_file(export_dir, entry["file"], entry["sha256"], entry["name"])
