"""Which training images each process sees in an epoch: class-balanced draws or a shuffled shard, per rank."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def balanced_weights(labels: list[int]) -> torch.Tensor:
    """torchsampler's ImbalancedDatasetSampler weights: one over the size of each sample's class."""
    from torchsampler import ImbalancedDatasetSampler

    return ImbalancedDatasetSampler(labels, labels=labels).weights


def source_balanced_weights(labels: list[int], sources: list[str]) -> torch.Tensor:
    """Inverse class frequency, with each class's share split equally among the sources that have it: a class draws
    as often as with balanced_weights, and within it each lab as often as the others, however many images it has."""
    pairs = Counter(zip(labels, sources))
    sources_per_class = Counter(label for label, _ in pairs)
    return torch.tensor([1.0 / (pairs[label, source] * sources_per_class[label])
                         for label, source in zip(labels, sources)], dtype=torch.double)


class EpochSampler(Sampler[int]):
    """One rank's share (epoch_images, default len(labels), // world_size indices) of an epoch, redrawn by set_epoch.

    Balanced: draws with replacement from the inverse-class-frequency distribution, as torchsampler does, from a
    generator seeded by (seed, epoch, rank), so ranks draw independently. Not balanced: one permutation shared by all
    ranks (seeded by seed and epoch), dealt out rank::world_size, so no image is seen twice in an epoch."""

    def __init__(self, labels: list[int], balanced: bool, seed: int, rank: int = 0, world_size: int = 1,
                 sources: list[str] | None = None, epoch_images: int | None = None) -> None:
        self.weights = None if not balanced else \
            source_balanced_weights(labels, sources) if sources is not None else balanced_weights(labels)
        self.size, self.seed, self.rank, self.world_size = len(labels), seed, rank, world_size
        self.num_samples = max(1, (epoch_images or len(labels)) // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw another epoch's indices."""
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, as an int64 tensor."""
        if self.weights is not None:
            generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
            return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        if self.num_samples * self.world_size > self.size:  # longer than the folder: several permutations
            order = torch.cat([torch.randperm(self.size, generator=generator)
                               for _ in range(-(-self.num_samples * self.world_size // self.size))])
        return order[self.rank::self.world_size][: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
