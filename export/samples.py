"""Real images from a checkpoint's own split, preprocessed by the artefacts' input contract."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.images import load_rgb
from bmcell.core.data.prepare import PreparedData, load_prepared
from bmcell.core.data.transforms import unit_transform


def checkpoint_split(checkpoint: Checkpoint, data: Path) -> PreparedData:
    """The checkpoint's train/val split, checking the split file's hash and that the images are under data."""
    return load_prepared(data, checkpoint.run_dir, checkpoint.split_sha256)


def balanced_pick(records: list[ImageRecord], count: int, seed: int = 0) -> list[ImageRecord]:
    """Up to count records taken round-robin over the classes, in a seeded, order-independent way."""
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.path):
        by_class[record.label].append(record)
    for label, members in by_class.items():
        random.Random(f"{seed}:{label}").shuffle(members)
    picked: list[ImageRecord] = []
    while len(picked) < count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picked) < count:
                picked.append(by_class[label].pop())
    return picked


def load_unit_images(data: Path, records: list[ImageRecord], image_size: int) -> torch.Tensor:
    """N x 3 x S x S float32 in [0, 1]: the exact input every exported artefact takes."""
    transform = unit_transform(image_size)
    return torch.stack([transform(load_rgb(Path(data) / r.path)) for r in records])
