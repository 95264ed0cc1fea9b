"""The one interface every export format implements: export an artefact, say whether it runs here, load it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

# A loaded artefact: float32 (N, 3, H, W) RGB in [0, 1] → float32 (N, num_classes) logits.
Runner = Callable[[np.ndarray], np.ndarray]


class ExportError(RuntimeError):
    """An export or a load that failed, naming the format and the cause."""


@dataclass(frozen=True)
class ExportInputs:
    """What every format is given.

    model: eval mode, CPU, float32; takes one RGB image 1x3xHxW float32 in [0, 1] (normalisation is folded in)
        and returns 1xC logits, or 1x(C+1) with novelty last.
    example: a 1x3xHxW input in [0, 1] (a real image).
    calibration: Nx3xHxW real images in [0, 1] from the checkpoint's training split, for static quantisation.
    classes: the class names in output order.
    metadata: flat str → str metadata to embed where the format allows (classes as JSON, mean, std, image size,
        preprocessing, source checkpoint sha256, bmcell version, licence, description).
    temperature: the calibrated temperature; formats whose output is probabilities give softmax(logits / it).
    novelty: whether the model's output has a novelty column after the C logits (1x(C+1)); its distance module
        (model.model.novelty) stays float in int8 artefacts.
    exported: the artefacts already written by this export, by format name, for a format that converts another
        (the ORT format converts the ONNX file instead of exporting and calibrating it again).
    views: how many views of each image the model runs its network on (bmcell.core.views): 1 or 8.
    """

    model: nn.Module
    example: torch.Tensor
    calibration: torch.Tensor
    classes: list[str]
    metadata: dict[str, str]
    temperature: float = 1.0
    exported: dict[str, Path] = field(default_factory=dict)
    novelty: bool = False
    views: int = 1


class ExportFormat(ABC):
    """One artefact kind: a family (executorch, torchscript, onnx, coreml) at one precision."""

    name: ClassVar[str]  # unique, e.g. "executorch-int8"; also the artefact's file stem
    family: ClassVar[str]  # export targets select families
    precision: ClassVar[str]  # "fp32", "fp16" or "int8"
    suffix: ClassVar[str]  # ".pte", ".onnx", ".mlpackage" (a folder)...
    runtime: ClassVar[str]  # what executes it on a device, for the manifest and the benchmark table
    input_kind: ClassVar[str] = "tensor"  # "tensor": 1x3xHxW float32 in [0, 1]; "image": an RGB picture of HxW
    output_kind: ClassVar[str] = "logits"  # or "probabilities": calibrated softmax(logits / temperature) inside

    def filename(self) -> str:
        """The artefact's file (or folder) name."""
        return f"model-{self.name}{self.suffix}"

    @abstractmethod
    def export(self, inputs: ExportInputs, path: Path) -> None:
        """Write the artefact to path (a temporary name the caller renames when everything succeeded)."""

    def cannot_run_here(self) -> str | None:
        """Why this artefact cannot be executed on this machine, or None when it can."""
        return None

    @abstractmethod
    def load(self, path: Path, threads: int | None = None) -> Runner:
        """Load the artefact into a runner; threads=None lets the runtime choose."""

    def inspect(self, path: Path) -> dict:
        """What the artefact declares about itself (inputs, outputs, embedded labels and metadata)."""
        return {}
