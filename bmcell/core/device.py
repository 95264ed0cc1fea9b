"""Which device runs a model: the one place that chooses between CUDA and CPU."""

from __future__ import annotations

import torch

from bmcell.core.errors import BmcellError


def select_device(spec: str = "auto") -> torch.device:
    """The device a --device option names; 'auto' is CUDA when present, else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise BmcellError(f"--device {spec} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(spec)


def device_description(device: torch.device) -> str:
    """A readable name of a device: the GPU's model, or 'cpu'."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
