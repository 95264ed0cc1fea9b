"""Stain-colour augmentation in haematoxylin-eosin-DAB (HED) optical-density space, after Tellez et al. 2018
("Whole-slide mitosis detection in H&E breast histology using PHH3 as a reference to train distilled stain-invariant
convolutional networks"): each stain's density is scaled and shifted, so a Giemsa/May-Grünwald smear from another
lab (yellowish to purple) is simulated by changing how much of each dye the image holds, not by rotating hues.

Works on float images in [0, 1] shaped (3, H, W) or batched (N, 3, H, W), on any device: the CPU data loader
applies it per image, a GPU pipeline per batch with one draw per image."""

from __future__ import annotations

import torch
from torch import nn

# Ruifrok & Johnston's stain vectors (scikit-image's rgb_from_hed): rows are the optical densities of H, E and DAB.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_MIN_INTENSITY = 1e-6  # optical density of a black pixel stays finite


def hed_jitter(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Images with each stain's density d replaced by d * scale + shift; scale and shift are (..., 3), one row per
    image of the batch (or a single row for one image)."""
    channels_last = images.movedim(-3, -1).clamp(min=_MIN_INTENSITY)
    density = -torch.log(channels_last) @ HED_FROM_RGB.to(images)
    density = density * scale[..., None, None, :] + shift[..., None, None, :]
    return torch.exp(-(density @ RGB_FROM_HED.to(images))).clamp(0.0, 1.0).movedim(-1, -3)


class RandomHEDJitter(nn.Module):
    """Scale each stain's density by U(1 - sigma, 1 + sigma) and shift it by U(-bias, bias), drawn per image."""

    def __init__(self, sigma: float = 0.15, bias: float = 0.05) -> None:
        super().__init__()
        self.sigma, self.bias = sigma, bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Jitter a (3, H, W) image or an (N, 3, H, W) batch, one draw per image."""
        draws = torch.rand(2, *images.shape[:-3], 3, device=images.device) * 2 - 1  # U(-1, 1) per image and stain
        return hed_jitter(images, 1 + self.sigma * draws[0], self.bias * draws[1])
