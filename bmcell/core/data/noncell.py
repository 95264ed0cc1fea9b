"""Images that are not cells — noise, flat colours, gradients, patterns, line drawings, text and smooth everyday-like
scenes — synthesised deterministically, to measure how often a model says "uncertain" when it should."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

NON_CELL_KINDS = ("uniform noise", "gaussian noise", "flat colour", "gradient", "checkerboard", "line drawing",
                  "text", "smooth scene")
# What outlier exposure trains on; the other kinds stay unseen, so reports show whether abstention generalises.
TRAINING_KINDS = ("uniform noise", "flat colour", "checkerboard", "line drawing")


def _drawing(rng: np.random.Generator, size: int, text: bool) -> np.ndarray:
    """Black strokes (a house-like drawing) or words on a light background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(image)
    if text:
        for row in range(1, 6):
            words = "".join(chr(int(c)) for c in rng.integers(97, 123, 12))
            draw.text((int(rng.integers(2, size // 4)), row * size // 7), words, fill=(0, 0, 0))
        return np.asarray(image)
    s = size
    draw.rectangle([s * 0.25, s * 0.45, s * 0.75, s * 0.9], outline=(0, 0, 0), width=max(1, s // 64))
    draw.polygon([(s * 0.2, s * 0.45), (s * 0.5, s * 0.15), (s * 0.8, s * 0.45)], outline=(0, 0, 0))
    draw.rectangle([s * 0.45, s * 0.68, s * 0.55, s * 0.9], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    for _ in range(3):
        x, y = rng.uniform(0, s, 2)
        draw.line([(x, y), (x + rng.uniform(-s / 3, s / 3), y + rng.uniform(-s / 3, s / 3))], fill=(0, 0, 0))
    return np.asarray(image)


def _one(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One HxWx3 uint8 image of the given kind."""
    if kind == "uniform noise":
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if kind == "gaussian noise":
        return np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size, 3)), 0, 255).astype(np.uint8)
    if kind == "flat colour":
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
    if kind == "gradient":
        ramp = np.linspace(0, 1, size)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[:, None, None]
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        return np.broadcast_to(start + (end - start) * ramp, (size, size, 3)).astype(np.uint8)
    if kind == "checkerboard":
        cell = int(rng.integers(4, max(5, size // 4)))
        board = ((np.arange(size)[:, None] // cell + np.arange(size)[None, :] // cell) % 2).astype(bool)
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        return np.where(board[..., None], a, b).astype(np.uint8)
    if kind in ("line drawing", "text"):
        return _drawing(rng, size, kind == "text")
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 4, 4)).astype(np.float32))  # smooth scene
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    return smooth.clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)


def non_cell_batches(count: int, size: int, batch_size: int, seed: int = 0,
                     kinds_used: tuple[str, ...] = NON_CELL_KINDS) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """non_cell_images in batches of at most batch_size (the same images in the same order), so that memory does
    not grow with count."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, batch_size):
        kinds = [kinds_used[i % len(kinds_used)] for i in range(start, min(count, start + batch_size))]
        pixels = np.stack([_one(kind, rng, size) for kind in kinds])
        yield torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, kinds


def non_cell_images(count: int, size: int, seed: int = 0,
                    kinds_used: tuple[str, ...] = NON_CELL_KINDS) -> tuple[torch.Tensor, list[str]]:
    """count (at least 1) images as Nx3xSxS float32 in [0, 1] (the exported models' input), cycling through the
    kinds."""
    return next(non_cell_batches(count, size, count, seed, kinds_used))


class OutlierBatches:
    """Normalised batches of non-cell images of TRAINING_KINDS for outlier exposure, a fresh seeded draw each step."""

    def __init__(self, count: int, size: int, mean: tuple[float, ...], std: tuple[float, ...], seed: int) -> None:
        self.count, self.size, self.seed, self.step = count, size, seed, 0
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def next(self) -> torch.Tensor:
        """The next batch, normalised like the training images."""
        self.step += 1
        images, _ = non_cell_images(self.count, self.size, self.seed * 1_000_003 + self.step, TRAINING_KINDS)
        return (images - self.mean) / self.std
