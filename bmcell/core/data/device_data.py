"""The fast data path: images decoded once (bmcell.core.data.cache), kept as uint8 on the training device, augmented there
a batch at a time with one random draw per image, and sampled like the plain path (bmcell.core.data.sampling).

Per image: a random resized crop from a square working copy a little larger than the image size, flips and 90-degree
rotations, all as one affine grid for grid_sample; then colour jitter (brightness, contrast, saturation, and hue as a
rotation in YIQ space, in that fixed order). "other-labs" adds zoom-out on white, HED stain jitter, Gaussian blur and
noise. Differences from the plain path's torchvision transforms: the crop is taken from the centred square (not the
whole non-square image), crops are not antialiased, out-of-range crop boxes are clamped instead of re-drawn, and JPEG
re-compression is skipped (it has no batched GPU implementation)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from bmcell.core.data.cache import to_device
from bmcell.core.data.sampling import EpochSampler
from bmcell.core.data.stain import RandomHEDJitter
from bmcell.core.data.transforms import Augmentation

WORKING_MARGIN = 9 / 8  # working copies are this much larger than the image size, so crops have room
_GRAY = (0.299, 0.587, 0.114)  # torchvision's luma weights
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def working_size(image_size: int) -> int:
    """Side of the square uint8 working copies: image_size * 9/8, rounded to a multiple of 8."""
    return 8 * round(image_size * WORKING_MARGIN / 8)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    """n draws from U(low, high)."""
    return torch.rand(n, device=device) * (high - low) + low


def crop_thetas(n: int, aug: Augmentation, device: torch.device) -> torch.Tensor:
    """Affine matrices (n, 2, 3) from output to input coordinates: random resized crop (with optional zoom-out),
    horizontal and vertical flips and a rotation by k * 90 degrees, one draw per image."""
    area = _uniform(n, *aug.scale, device)
    log_ratio = _uniform(n, math.log(aug.ratio[0]), math.log(aug.ratio[1]), device)
    half_w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    half_h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    zoom = torch.where(torch.rand(n, device=device) < aug.zoom_out[0], _uniform(n, *aug.zoom_out[1:], device), 1.0)
    room = torch.stack([1 - half_w, 1 - half_h], 1) * aug.centre_jitter
    centre = (torch.rand(n, 2, device=device) * 2 - 1) * zoom[:, None] * room
    k = torch.randint(4, (n,), device=device).float() * (math.pi / 2)
    cos, sin = k.cos().round(), k.sin().round()
    flips = torch.randint(2, (n, 2), device=device).float() * 2 - 1
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) * flips[:, None, :]
    linear = torch.stack([half_w, half_h], 1)[:, :, None] * zoom[:, None, None] * rotation
    return torch.cat([linear, centre[:, :, None]], 2)


def _hue_matrices(shift: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) RGB matrices rotating hue by shift turns (a rotation of the IQ plane of YIQ)."""
    angle = shift * 2 * math.pi
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rotate = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                          torch.stack([zero, sin, cos], 1)], 1)
    yiq = _RGB_TO_YIQ.to(shift.device)
    return torch.linalg.inv(yiq) @ rotate @ yiq


def colour_jitter(images: torch.Tensor, strength: tuple[float, float, float, float]) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of float images in [0, 1], one draw per image, in that order.
    All four are linear in the pixels, so they are composed into one 3x3 matrix and offset per image and applied in
    one pass, clamped once at the end (torchvision clamps after each and shuffles their order)."""
    n, channels, height, width = images.shape
    device = images.device
    brightness, contrast, saturation = (_uniform(n, 1 - s, 1 + s, device) for s in strength[:3])
    gray = torch.tensor(_GRAY, device=device)
    mean_gray = images.mean((2, 3)) @ gray * brightness  # the contrast pivot, after brightness
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    saturate = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * gray.expand(n, 3, 3)
    colour = _hue_matrices(_uniform(n, -strength[3], strength[3], device)) @ saturate
    matrix = colour * (contrast * brightness)[:, None, None]
    offset = colour.sum(2) * ((1 - contrast) * mean_gray)[:, None]  # colour @ ones * contrast's shift
    flat = torch.baddbmm(offset[:, :, None], matrix, images.reshape(n, channels, -1))
    return flat.clamp_(0, 1).view(n, channels, height, width)


def gaussian_blur(images: torch.Tensor, probability: float, low: float, high: float, kernel: int = 7) -> torch.Tensor:
    """Blur each image with probability p by a Gaussian of sigma ~ U(low, high) (reflect padding); others pass."""
    n, channels, height, width = images.shape
    sigma = _uniform(n, low, high, images.device)
    offsets = torch.arange(kernel, device=images.device) - kernel // 2
    weights = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    identity = (offsets == 0).float().expand(n, kernel)
    chosen = torch.rand(n, device=images.device) < probability
    weights = torch.where(chosen[:, None], weights / weights.sum(1, keepdim=True), identity)
    weights = weights.repeat_interleave(channels, 0)[:, None]  # (n * channels, 1, kernel)
    flat = images.reshape(1, n * channels, height, width)
    pad = kernel // 2
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), weights[:, :, None, :], groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), weights[:, :, :, None], groups=n * channels)
    return flat.reshape(n, channels, height, width)


def augment_batch(images: torch.Tensor, image_size: int, aug: Augmentation) -> torch.Tensor:
    """uint8 (N, 3, S, S) working copies → augmented float32 (N, 3, image_size, image_size) in [0, 1]."""
    n, device = len(images), images.device
    grid = F.affine_grid(crop_thetas(n, aug, device), [n, 3, image_size, image_size], align_corners=False)
    shifted = images.float().sub_(255).div_(255)  # in [-1, 0], so the zero padding becomes white after the +1
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False).add_(1)
    if aug.hed is not None:
        out = RandomHEDJitter(*aug.hed)(out)
    out = colour_jitter(out, aug.colour)
    if aug.blur[0] > 0:
        out = gaussian_blur(out, *aug.blur)
    if aug.noise[0] > 0:
        noisy = torch.rand(n, 1, 1, 1, device=device) < aug.noise[0]
        out = (out + torch.randn_like(out) * aug.noise[1] * noisy).clamp(0, 1)
    return out


class ImageStore:
    """Square uint8 images (N x S x S x 3): a tensor on CUDA, the memory-mapped cache itself on CPU."""

    def __init__(self, array: np.ndarray, device: torch.device) -> None:
        self.device = device
        self.images = to_device(array, device) if device.type == "cuda" else array

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at these indices as uint8 (B, 3, S, S), channels_last, on the device."""
        if isinstance(self.images, torch.Tensor):
            return self.images[indices.to(self.device)].permute(0, 3, 1, 2)
        return torch.from_numpy(self.images[indices.numpy()]).permute(0, 3, 1, 2)


class DeviceBatches:
    """Batches of normalised float32 images (channels_last) and int64 targets, made on the store's device: augmented
    and drawn by the sampler for training, in order and only normalised for evaluation (sampler None)."""

    def __init__(self, store: ImageStore, targets: list[int], batch_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], sampler: EpochSampler | None = None,
                 augmentation: tuple[int, Augmentation] | None = None) -> None:
        self.store, self.batch_size, self.sampler, self.augmentation = store, batch_size, sampler, augmentation
        self.targets = torch.tensor(targets, dtype=torch.long)
        self.mean = torch.tensor(mean, device=store.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=store.device).view(1, 3, 1, 1)
        self.drop_last = sampler is not None and len(sampler) > batch_size

    def _order(self) -> torch.Tensor:
        """This epoch's indices."""
        return self.sampler.indices() if self.sampler is not None else torch.arange(len(self.store))

    def __len__(self) -> int:
        count = len(self.sampler) if self.sampler is not None else len(self.store)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        for batch in range(len(self)):
            indices = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            images = self.store.take(indices)
            if self.augmentation is not None:
                images = augment_batch(images, *self.augmentation)
            else:
                images = images.float() / 255
            images = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            yield images, self.targets[indices].to(self.store.device, non_blocking=True)
