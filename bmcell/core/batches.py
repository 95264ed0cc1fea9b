"""Where training and validation batches come from: DataLoader workers decoding and augmenting each image
('loader'), or images decoded once and augmented a batch at a time on the training device ('device')."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from bmcell.core.config import ConfigError, TrainConfig
from bmcell.core.data.cache import decoded_images
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.device_data import DeviceBatches, ImageStore, working_size
from bmcell.core.data.prepare import PreparedData
from bmcell.core.data.sampling import EpochSampler
from bmcell.core.data.sources import record_sources
from bmcell.core.data.transforms import AUGMENTATIONS, eval_transform, train_transform
from bmcell.core.distributed import Dist
from bmcell.core.models import get_arch


def make_loader(dataset: Dataset, batch_size: int, workers: int, sampler=None, train: bool = False) -> DataLoader:
    """A DataLoader; training batches drop a ragged tail so batch norm never sees a single image."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available(),
                      drop_last=train and len(sampler if sampler is not None else dataset) > batch_size)


def resolve_data_path(spec: str) -> str:
    """'loader' or 'device' for a data_path setting; 'auto' picks the device path (see TrainConfig.data_path)."""
    return "device" if spec == "auto" else spec


@dataclass
class EpochBatches:
    """One process's training and validation batches, built once; train(epoch) reshuffles."""

    sampler: EpochSampler
    batch_size: int
    make_train: Callable[[], Iterable]
    make_val: Callable[[], Iterable]

    def train(self, epoch: int) -> Iterable:
        """This epoch's training batches (images, targets), with a length."""
        self.sampler.set_epoch(epoch)
        return self.make_train()

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (a ragged last batch is dropped)."""
        return max(1, len(self.sampler) // self.batch_size)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each process's share of the (global) batch size."""
    if batch_size % world_size:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must divide evenly over "
                          f"{world_size} processes; use a multiple of {world_size}")
    return batch_size // world_size


def make_batches(config: TrainConfig, data: PreparedData, device: torch.device, dist: Dist = Dist(),
                 cache_dir: Path | None = None) -> EpochBatches:
    """The data path config.data_path names: DataLoader workers decoding and augmenting each image ('loader'), or
    images decoded once into cache_dir and augmented a batch at a time on the device ('device'). Validation images
    are dealt out over the processes."""
    arch = get_arch(config.arch)
    batch = per_rank_batch(config.batch_size, dist.world_size)
    train_targets = [data.classes.index(r.label) for r in data.train]
    sources = record_sources(data.root, [r.path for r in data.train]) if config.balance_sources else None
    sampler = EpochSampler(train_targets, config.balanced_sampler, config.seed, dist.rank, dist.world_size, sources,
                           config.epoch_images)
    val_records = data.val[dist.rank::dist.world_size]  # none for some processes when there are fewer images
    if resolve_data_path(config.data_path) == "device":
        work = working_size(config.image_size)
        train = DeviceBatches(ImageStore(decoded_images(data.root, data.train, work, cache_dir), device), train_targets,
                              batch, arch.mean, arch.std, sampler,
                              (config.image_size, AUGMENTATIONS[config.augment]))
        val = DeviceBatches(ImageStore(decoded_images(data.root, val_records, config.image_size, cache_dir), device),
                            [data.classes.index(r.label) for r in val_records], batch, arch.mean, arch.std
                            ) if val_records else []
        return EpochBatches(sampler, batch, lambda: train, lambda: val)
    workers = config.workers if config.workers is not None else min(8, os.cpu_count() or 1)
    train_set = CellImageDataset(data.root, data.train, data.classes,
                                 train_transform(config.image_size, arch.mean, arch.std, config.augment))
    val_set = CellImageDataset(data.root, val_records, data.classes,
                               eval_transform(config.image_size, arch.mean, arch.std))
    return EpochBatches(sampler, batch, lambda: make_loader(train_set, batch, workers, sampler, train=True),
                        lambda: make_loader(val_set, batch, workers) if val_records else [])
