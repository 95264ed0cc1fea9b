"""How many images a model gets right answering over 1, 2, 4 or 8 of the picture's symmetries (bmcell.core.views):

    python scripts/views_eval.py MODEL --data NAME=DIR [--data NAME=DIR ...]

MODEL: a run or release (its network alone: a release's own `views` is ignored). Each DIR is a class-per-folder set
of the model's classes (e.g. a `bmcell combine` folder's heldout/<source>). Prints a Markdown table of correct
answers per set: 1 view (the picture as given), 2 (and its mirror), 4 (the quarter turns), 8 (each mirrored: what
`bmcell release --views 8` ships). One pass of the network per view and image."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bmcell.core.checkpoint import load_checkpoint, resolve_checkpoint
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.folder import ImageRecord, list_image_files
from bmcell.core.data.transforms import eval_transform

SUBSETS = {1: [0], 2: [0, 4], 4: [0, 1, 2, 3], 8: list(range(8))}  # indices into symmetries()


def symmetries(x: torch.Tensor) -> list[torch.Tensor]:
    """The quarter turns 0-3 of N x C x S x S pictures, then each of them mirrored."""
    turns = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return turns + [turn.flip(3) for turn in turns]


@torch.no_grad()
def view_logits(model: torch.nn.Module, dataset: CellImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """N x 8 x classes logits (the views in symmetries' order) and the N targets."""
    logits, targets = [], []
    for images, labels in DataLoader(dataset, batch_size=32, num_workers=1):
        logits.append(torch.stack([model(view) for view in symmetries(images)], 1))
        targets.append(labels)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", action="append", required=True, help="NAME=DIR, repeatable")
    args = parser.parse_args()
    checkpoint = load_checkpoint(resolve_checkpoint(args.model))
    model, transform = checkpoint.build_model(), eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std)
    print("| set | images | " + " | ".join(f"{n} view{'s' * (n > 1)}" for n in SUBSETS) + " |")
    print("|---|---:|" + "---:|" * len(SUBSETS))
    for spec in args.data:
        name, _, folder = spec.partition("=")
        records = [ImageRecord(path, Path(path).parts[0], "") for path in list_image_files(Path(folder))]
        logits, targets = view_logits(model, CellImageDataset(Path(folder), records, checkpoint.classes, transform))
        right = [int((logits[:, views].mean(1).argmax(1) == targets).sum()) for views in SUBSETS.values()]
        print(f"| {name} | {len(targets)} | " + " | ".join(map(str, right)) + " |", flush=True)


if __name__ == "__main__":
    main()
