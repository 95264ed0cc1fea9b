"""Calibrate a model to a microscope without labels (AdaBN): re-estimate every BatchNorm layer's running mean and
variance on a lab's own photos, keep every learned weight, and write a new checkpoint that exports like any other."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from bmcell.core.checkpoint import Checkpoint, carried_meta, save_checkpoint
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.folder import DatasetError, ImageRecord, check_images, list_images_anywhere
from bmcell.core.data.prepare import SPLIT_FILE
from bmcell.core.data.transforms import eval_transform
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import check_folder_path, staged_folder

MIN_ADAPT_IMAGES = 32  # fewer images give running statistics too noisy to trust
MIN_SIDE = 32  # pixels on the shorter side; smaller files are icons or thumbnails, not microscope photos


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of the network."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def too_small(root: Path, records: list[ImageRecord]) -> list[str]:
    """The records' paths whose image is under MIN_SIDE px on its shorter side, read from the file headers alone
    (check_images has already decoded each once)."""
    small = []
    for record in records:
        with Image.open(Path(root) / record.path) as image:
            if min(image.size) < MIN_SIDE:
                small.append(record.path)
    return small


def adaptation_images(folder: Path, warn: Callable[[str], None], minimum: int = MIN_ADAPT_IMAGES,
                      purpose: str = "calibration") -> list[ImageRecord]:
    """Every usable image under folder (any layout, labels ignored), checked before any work: too few usable images
    or images too small to be microscope photos are errors naming what to do."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--images {folder} is not a folder of images")
    files = list_images_anywhere(folder)
    records, bad = check_images(folder, {f: "unlabelled" for f in files})
    if bad:
        warn(f"skipping {len(bad)} unusable image(s) in {folder}, e.g. {bad[0].path}: {bad[0].reason}")
    if not records:
        raise DatasetError(f"--images {folder}: no usable image (.jpg/.png/.tif/.bmp/.webp) found"
                           + (f"; {len(bad)} file(s) could not be decoded" if bad else ""))
    tiny = too_small(folder, records)
    if tiny:
        raise DatasetError(f"--images {folder}: {len(tiny)} image(s) are under {MIN_SIDE} px on a side (e.g. "
                           f"{tiny[:3]}); use photos of cells as the lab takes them, not thumbnails")
    if len(records) < minimum:
        raise DatasetError(f"--images {folder}: {len(records)} usable image(s); {purpose} needs at least "
                           f"{minimum} (a few hundred is better) of this microscope's cell photos")
    return records


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device) -> int:
    """Reset every BatchNorm layer's statistics and re-estimate them as a plain average over the loader's batches
    (weights untouched); returns the number of layers."""
    layers = batchnorm_layers(model)
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over all batches, not an exponential one
        layer.train()
    for images, _ in loader:
        model(images.to(device))
    model.eval()
    return len(layers)


def adapt_checkpoint(checkpoint: Checkpoint, images: Path, out: Path, device: torch.device, batch_size: int = 32,
                     warn: Callable[[str], None] = print, carry: tuple[Path, ...] = ()) -> Path:
    """Write out/best.safetensors + best.json (and the source's split.json when it has one: the re-estimation needs
    only the lab's images; and a copy of each carry folder, e.g. a release's sample set): the checkpoint with
    BatchNorm statistics of the images in `images`; its metadata records what it was adapted on. The novelty
    statistics stay the source's: AdaBN maps the lab's features onto the source's, which they describe. Everything
    is checked before any work, and out appears only when complete. Returns best.json."""
    out = Path(out)
    check_folder_path(out)
    if out.is_dir() and any(out.iterdir()):
        raise BmcellError(f"--out {out} exists and is not empty; nothing is overwritten: choose a new folder")
    model = checkpoint.build_model()
    if not batchnorm_layers(model):
        raise BmcellError(f"{checkpoint.json_path}: {checkpoint.arch} has no BatchNorm layer, so there are "
                          "no statistics to re-estimate; it needs no calibration")
    records = adaptation_images(images, warn)
    split = checkpoint.run_dir / SPLIT_FILE
    if not split.is_file():
        warn(f"{checkpoint.run_dir} has no {SPLIT_FILE}, so {out} gets none either: like its source, it cannot be "
             f"evaluated, exported from its training folder or released until that file is copied into it")
    dataset = CellImageDataset(images, records, ["unlabelled"],
                               eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std))
    model.to(device)
    layers = reestimate_batchnorm(model, DataLoader(dataset, batch_size=batch_size, shuffle=False), device)
    listing = hashlib.sha256("".join(f"{r.path}\t{r.sha256}\n" for r in records).encode()).hexdigest()
    adapted_on = {"folder": str(Path(images).resolve()), "images": len(records), "images_sha256": listing,
                  "batchnorm_layers": layers, "source_weights_sha256": checkpoint.weights_sha256,
                  "source_checkpoint": str(checkpoint.json_path),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "note": "BatchNorm statistics re-estimated on these unlabelled images (AdaBN); learned weights, "
                          "temperature, abstention threshold and novelty statistics are the source model's"}
    novelty = checkpoint.novelty
    novelty_meta = {"novelty": checkpoint.meta["novelty"]} if novelty else {}
    with staged_folder(out) as staging:
        if split.is_file():
            shutil.copy2(split, staging / SPLIT_FILE)
        for folder in carry:
            shutil.copytree(folder, staging / folder.name)
        name = save_checkpoint(staging, "best", model, carried_meta(checkpoint.meta) | novelty_meta
                               | {"adapted_on": adapted_on}, novelty.tensors() if novelty else None).name
    return out / name
