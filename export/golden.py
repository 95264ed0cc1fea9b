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
from bmcell.core.evaluation import unit_logits
from bmcell.core.fileio import atomic_write_bytes, sha256_path
from export.manifest import ManifestError

GOLDEN = "golden.safetensors"


def reference_logits(checkpoint: Checkpoint, inputs: torch.Tensor, device: torch.device) -> np.ndarray:
    """float32 logits of [0, 1] inputs (bmcell.core.evaluation.unit_logits) with TF32 off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return unit_logits(checkpoint, inputs, device)


def write_golden(path: Path, inputs: torch.Tensor, logits: np.ndarray, names: list[str], source_sha256: str,
                 device: torch.device) -> dict:
    """Save inputs (as exact uint8), reference logits and provenance; returns the manifest's golden entry."""
    pixels = (inputs * 255).round().to(torch.uint8)
    info = {"source_weights_sha256": source_sha256, "device": device_description(device), "tf32": "off",
            "torch": torch.__version__, "images": json.dumps(names)}
    atomic_write_bytes(path, save_safetensors_bytes({"inputs": pixels, "logits": torch.from_numpy(logits)}, info))
    return {"file": path.name, "sha256": sha256_path(path), "count": len(names), "device": info["device"],
            "tf32": "off"}


def read_golden(path: Path, expected_source_sha256: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """float32 [0, 1] inputs, reference logits and provenance, refusing a golden set of another model."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = handle.metadata() or {}
            pixels, logits = handle.get_tensor("inputs"), handle.get_tensor("logits")
    except (SafetensorError, OSError) as error:
        raise ManifestError(f"{path}: unreadable golden set ({error})") from None
    if info.get("source_weights_sha256") != expected_source_sha256:
        raise ManifestError(f"{path} holds reference logits of another model (weights sha256 "
                            f"{str(info.get('source_weights_sha256'))[:12]}... != {expected_source_sha256[:12]}...)")
    return (pixels.float() / 255).numpy(), logits.numpy(), info
