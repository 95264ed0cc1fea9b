"""Training augmentation suited to cells, and the one evaluation preprocessing every artefact shares."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

RESIZE_INTERPOLATION = v2.InterpolationMode.BILINEAR


class RandomRot90(nn.Module):
    """Rotate a tensor image by a random multiple of 90 degrees (cells have no up)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Rotate by k*90 degrees, k drawn uniformly from 0..3."""
        return torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))


def train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """Random resized crop, flips, 90-degree rotations and mild colour jitter, then normalise."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), ratio=(0.8, 1.25),
                             interpolation=RESIZE_INTERPOLATION, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.02),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def unit_transform(image_size: int) -> v2.Compose:
    """The preprocessing contract of every exported artefact: resize the shorter side to image_size (bilinear,
    antialiased), centre-crop a square, scale uint8 to float32 [0, 1]; RGB, CxHxW."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(image_size, interpolation=RESIZE_INTERPOLATION, antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
    ])


def eval_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """unit_transform, then normalise with the model's mean and std."""
    return v2.Compose([unit_transform(image_size), v2.Normalize(mean, std)])
