"""A torch Dataset over checked image records that survives files going bad mid-run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.images import BadImageError, load_rgb

log = logging.getLogger(__name__)


class CellImageDataset(Dataset):
    """Images of a class-per-folder dataset with integer targets in the order of `classes`."""

    def __init__(self, root: Path, records: list[ImageRecord], classes: list[str],
                 transform: Callable[[object], torch.Tensor]) -> None:
        self.root = Path(root)
        self.records = records
        self.classes = classes
        self.targets = [classes.index(r.label) for r in records]
        self.transform = transform
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def get_labels(self) -> list[int]:
        """Targets of every record, as torchsampler's ImbalancedDatasetSampler expects."""
        return self.targets

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for candidate in self._same_class_from(index):
            try:
                image = load_rgb(self.root / self.records[candidate].path)
            except BadImageError as error:
                if candidate not in self._failed:
                    self._failed.add(candidate)
                    log.warning("skipping an image that went bad after the start check: %s", error)
                continue
            return self.transform(image), self.targets[candidate]
        raise BadImageError(f"every image of class {self.records[index].label!r} is unreadable now under {self.root}")

    def _same_class_from(self, index: int) -> Iterator[int]:
        """This index, then the other indices of the same class, to stand in for a file that went bad."""
        n = len(self)
        for step in range(n):
            candidate = (index + step) % n
            if self.targets[candidate] == self.targets[index]:
                yield candidate
