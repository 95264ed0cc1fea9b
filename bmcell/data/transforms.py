"""Training augmentation suited to cells, and the one evaluation preprocessing every artefact shares."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms import v2

from bmcell.data.stain import RandomHEDJitter

RESIZE_INTERPOLATION = v2.InterpolationMode.BILINEAR
OTHER_LABS_CENTRE_JITTER = 0.4  # share of the free room a zoomed crop's centre may move: the cell stays in frame


class RandomRot90(nn.Module):
    """Rotate a tensor image by a random multiple of 90 degrees (cells have no up)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Rotate by k*90 degrees, k drawn uniformly from 0..3."""
        return torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))


class CentredResizedCrop(nn.Module):
    """A random resized crop whose centre stays within `jitter` of the free room around the image centre: zooming in
    up to a fifth of the area keeps a centred cell in the frame (torchvision's crop may land anywhere)."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float], jitter: float) -> None:
        super().__init__()
        self.size, self.scale, self.ratio, self.jitter = size, scale, ratio, jitter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Crop a random area share and aspect ratio near the centre of a CxHxW image, then resize to size."""
        height, width = image.shape[-2:]
        area = float(torch.empty(()).uniform_(*self.scale))
        ratio = math.exp(float(torch.empty(()).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))))
        crop_w = min(width, round(math.sqrt(area * ratio) * width))
        crop_h = min(height, round(math.sqrt(area / ratio) * height))
        shift = (torch.rand(2) * 2 - 1) * self.jitter
        top = round((height - crop_h) / 2 * (1 + float(shift[0])))
        left = round((width - crop_w) / 2 * (1 + float(shift[1])))
        return v2.functional.resized_crop(image, top, left, crop_h, crop_w, [self.size, self.size],
                                          interpolation=RESIZE_INTERPOLATION, antialias=True)


def _cells_augmentation(image_size: int) -> list[nn.Module]:
    """PBC-like images: random resized crop (60-100% of the area), flips, 90-degree rotations, mild colour jitter."""
    return [
        v2.RandomResizedCrop(image_size, scale=(0.6, 1.0), ratio=(0.8, 1.25),
                             interpolation=RESIZE_INTERPOLATION, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.02),
        v2.ToDtype(torch.float32, scale=True),
    ]


def _other_labs_augmentation(image_size: int) -> list[nn.Module]:
    """Images from other microscopes and cameras: a wide zoom range (a cell a fifth of the frame to filling it),
    JPEG re-compression, stain density jitter in HED space, stronger colour jitter, blur and sensor noise."""
    return [
        v2.RandomApply([v2.RandomZoomOut(fill=255, side_range=(1.0, 1.6))], p=0.25),
        CentredResizedCrop(image_size, scale=(0.15, 1.0), ratio=(0.75, 1.33), jitter=OTHER_LABS_CENTRE_JITTER),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        RandomRot90(),
        v2.RandomApply([v2.JPEG((25, 95))], p=0.3),
        v2.ToDtype(torch.float32, scale=True),
        RandomHEDJitter(sigma=0.25, bias=0.08),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.06),
        v2.RandomApply([v2.GaussianBlur(7, sigma=(0.3, 2.0))], p=0.3),
        v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.3),
    ]


AUGMENTATIONS = {"cells": _cells_augmentation, "other-labs": _other_labs_augmentation}


def train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    augment: str = "cells") -> v2.Compose:
    """The named augmentation (AUGMENTATIONS) of a uint8 image, then normalise."""
    return v2.Compose([v2.ToImage(), *AUGMENTATIONS[augment](image_size), v2.Normalize(mean, std)])


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
