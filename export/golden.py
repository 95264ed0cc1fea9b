"""The golden set: real validation images and the float32 PyTorch reference logits every artefact must match."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.device import device_description
from bmcell.core.evaluation import unit_logits, unit_outputs
from bmcell.core.fileio import atomic_write_bytes, sha256_path
from export.manifest import ManifestError, verify_file

GOLDEN = "golden.safetensors"


def reference_logits(checkpoint: Checkpoint, inputs: torch.Tensor, device: torch.device) -> np.ndarray:
    """float32 logits of [0, 1] inputs (bmcell.core.evaluation.unit_logits) with TF32 off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return unit_logits(checkpoint, inputs, device)


def reference_outputs(checkpoint: Checkpoint, inputs: torch.Tensor, device: torch.device) -> np.ndarray:
    """float32 outputs (logits, then novelty when the model has it) of [0, 1] inputs, TF32 off: what every
    artefact must give."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return unit_outputs(checkpoint, inputs, device)


def write_golden(path: Path, inputs: torch.Tensor, outputs: np.ndarray, classes: int, names: list[str],
                 source_sha256: str, device: torch.device) -> dict:
    """Save inputs (as exact uint8), reference logits (and novelty, when outputs has that column) and provenance;
    returns the manifest's golden entry."""
    pixels = (inputs * 255).round().to(torch.uint8)
    info = {"source_weights_sha256": source_sha256, "device": device_description(device), "tf32": "off",
            "torch": torch.__version__, "images": json.dumps(names)}
    tensors = {"inputs": pixels, "logits": torch.from_numpy(np.ascontiguousarray(outputs[:, :classes]))}
    if outputs.shape[1] > classes:
        tensors["novelty"] = torch.from_numpy(np.ascontiguousarray(outputs[:, classes]))
    atomic_write_bytes(path, save_safetensors_bytes(tensors, info))
    return {"file": path.name, "sha256": sha256_path(path), "count": len(names), "device": info["device"],
            "tf32": "off"}


def _another_model(path: Path, found: object, expected: str) -> ManifestError:
    return ManifestError(f"{path} holds reference logits of another model (weights sha256 "
                         f"{str(found)[:12]}... != {expected[:12]}...)")


def read_golden(path: Path, expected_source_sha256: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """float32 [0, 1] inputs, reference outputs (the logits, then the novelty column when the set has one: the
    artefacts' own layout) and provenance, refusing a golden set of another model."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = handle.metadata() or {}
            pixels, outputs = handle.get_tensor("inputs"), handle.get_tensor("logits")
            if "novelty" in handle.keys():
                outputs = torch.cat([outputs, handle.get_tensor("novelty")[:, None]], dim=1)
    except (SafetensorError, OSError) as error:
        raise ManifestError(f"{path}: unreadable golden set ({error})") from None
    if info.get("source_weights_sha256") != expected_source_sha256:
        raise _another_model(path, info.get("source_weights_sha256"), expected_source_sha256)
    return (pixels.float() / 255).numpy(), outputs.numpy(), info


def read_export_golden(export_dir: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """An export folder's golden set (read_golden), refused unless its bytes still have the sha256 the manifest
    records: an altered input pixel or reference logit would otherwise be blamed on the artefacts."""
    entry, source = manifest["golden"], manifest["source_checkpoint"]["weights_sha256"]
    path = Path(export_dir) / entry["file"]
    try:
        verify_file(export_dir, entry["file"], entry["sha256"], "golden set",
                    "its inputs or reference logits changed after export, so no artefact can be judged against "
                    "it; export the checkpoint again")
    except ManifestError:
        try:  # a golden set of another model (the commonest mix-up) is named as such
            with safe_open(str(path), framework="pt") as handle:
                found = (handle.metadata() or {}).get("source_weights_sha256")
        except (SafetensorError, OSError):
            found = None
        if found is not None and found != source:
            raise _another_model(path, found, source) from None
        raise
    return read_golden(path, source)
