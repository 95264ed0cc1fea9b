"""The exported graph: normalisation folded in front of the classifier, so every artefact takes [0, 1] RGB."""

from __future__ import annotations

import torch
from torch import nn


class NormalizedClassifier(nn.Module):
    """(x - mean) / std, then the network: input 1x3xHxW float32 RGB in [0, 1], output logits."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        return self.model((x - self.mean) / self.std)
