"""Training augmentation suited to cells, and the one evaluation preprocessing every artefact shares."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

from bmcell.core.data.stain import RandomHEDJitter

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


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the per-image random draws of one augmentation recipe. Both data paths read them: the torchvision
    ops of the plain path (augmentation_ops) and the batched ops of the device path (data/device_data.py)."""

    scale: tuple[float, float]  # crop area share
    ratio: tuple[float, float]  # crop aspect ratio
    colour: tuple[float, float, float, float]  # brightness, contrast, saturation, hue
    zoom_out: tuple[float, float, float] = (0.0, 1.0, 1.0)  # probability, side range (on white)
    hed: tuple[float, float] | None = None  # stain density jitter: sigma, bias
    blur: tuple[float, float, float] = (0.0, 0.3, 2.0)  # probability, sigma range (kernel 7)
    noise: tuple[float, float] = (0.0, 0.03)  # probability, sigma
    jpeg: tuple[float, int, int] = (0.0, 25, 95)  # probability, quality range (plain path only)
    centre_jitter: float = 1.0  # share of the free room the crop centre may move (1: anywhere, like torchvision)


AUGMENTATIONS = {
    # PBC-like images: random resized crop (60-100% of the area), flips, 90-degree rotations, mild colour jitter.
    "cells": Augmentation(scale=(0.6, 1.0), ratio=(0.8, 1.25), colour=(0.15, 0.15, 0.15, 0.02)),
    # Other microscopes and cameras: a wide zoom range (a cell a fifth of the frame to filling it), JPEG
    # re-compression, stain density jitter in HED space, stronger colour jitter, blur and sensor noise.
    "other-labs": Augmentation(scale=(0.15, 1.0), ratio=(0.75, 1.33), colour=(0.3, 0.3, 0.4, 0.06),
                               zoom_out=(0.25, 1.0, 1.6), hed=(0.25, 0.08), blur=(0.3, 0.3, 2.0), noise=(0.3, 0.03),
                               jpeg=(0.3, 25, 95), centre_jitter=OTHER_LABS_CENTRE_JITTER),
}


def augmentation_ops(aug: Augmentation, image_size: int) -> list[nn.Module]:
    """The torchvision ops of one recipe, uint8 CxHxW in, float32 [0, 1] out (before normalisation)."""
    ops: list[nn.Module] = []
    if aug.zoom_out[0] > 0:
        ops.append(v2.RandomApply([v2.RandomZoomOut(fill=255, side_range=aug.zoom_out[1:])], p=aug.zoom_out[0]))
    ops.append(v2.RandomResizedCrop(image_size, scale=aug.scale, ratio=aug.ratio, interpolation=RESIZE_INTERPOLATION,
                                    antialias=True) if aug.centre_jitter >= 1
               else CentredResizedCrop(image_size, aug.scale, aug.ratio, aug.centre_jitter))
    ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRot90()]
    if aug.jpeg[0] > 0:
        ops.append(v2.RandomApply([v2.JPEG(aug.jpeg[1:])], p=aug.jpeg[0]))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if aug.hed is not None:
        ops.append(RandomHEDJitter(*aug.hed))
    brightness, contrast, saturation, hue = aug.colour
    ops.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    if aug.blur[0] > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(7, sigma=aug.blur[1:])], p=aug.blur[0]))
    if aug.noise[0] > 0:
        ops.append(v2.RandomApply([v2.GaussianNoise(sigma=aug.noise[1])], p=aug.noise[0]))
    return ops


def train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    augment: str = "cells") -> v2.Compose:
    """The named augmentation (AUGMENTATIONS) of a uint8 image, then normalise."""
    return v2.Compose([v2.ToImage(), *augmentation_ops(AUGMENTATIONS[augment], image_size), v2.Normalize(mean, std)])


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
