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


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a part of the device name;
# the most specific names first. Used only to report the fraction of peak a training step reaches.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("A10G", 70.0))


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in TFLOP/s when BF16_PEAK_TFLOPS knows it (None on CPU or an unknown GPU)."""
    name = device_description(device)
    return next((peak for part, peak in BF16_PEAK_TFLOPS if part in name), None) if device.type == "cuda" else None


def device_description(device: torch.device) -> str:
    """A readable name of a device: the GPU's model, or 'cpu'."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
