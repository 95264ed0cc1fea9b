"""Decode every image once into a square uint8 array, kept in a memory-mapped .npy file keyed by the images' sha256.

The file lives in the run folder (RUN/cache/), so epochs after the first, and resumed runs, decode no JPEG. It holds
N x size x size x 3 bytes (PBC's 14k images at 288 px: 3.5 GB on disk); being memory-mapped, it costs RAM only as
page cache, which the operating system gives back under pressure."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.images import BadImageError, load_rgb
from bmcell.core.data.transforms import RESIZE_INTERPOLATION

log = logging.getLogger(__name__)


def square_uint8(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to size (bilinear, antialiased) and centre-crop a square: uint8, HxWx3. At the model's
    image size this is exactly the evaluation preprocessing (unit_transform) before scaling to [0, 1]."""
    tensor = TF.pil_to_tensor(image)
    tensor = TF.center_crop(TF.resize(tensor, [size], interpolation=RESIZE_INTERPOLATION, antialias=True), [size])
    return tensor.permute(1, 2, 0).numpy()


def cache_path(cache_dir: Path, records: list[ImageRecord], size: int) -> Path:
    """The cache file of these records (in this order) at this size."""
    key = hashlib.sha256(f"{size}\n".encode() + "\n".join(r.sha256 for r in records).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"decoded-{size}px-{len(records)}-{key}.npy"


def _fill_bad(array: np.ndarray, bad: list[int], records: list[ImageRecord]) -> None:
    """Stand in for images that went bad since the start check with another image of their class."""
    good = {r.label: i for i, r in enumerate(records) if i not in set(bad)}
    for index in bad:
        if records[index].label not in good:
            raise BadImageError(f"every image of class {records[index].label!r} is unreadable now")
        array[index] = array[good[records[index].label]]


def decode_into(array: np.ndarray, root: Path, records: list[ImageRecord], size: int, workers: int) -> None:
    """Decode and square every record into array (N x size x size x 3), in parallel threads."""
    def one(index: int) -> int | None:
        try:
            array[index] = square_uint8(load_rgb(Path(root) / records[index].path), size)
        except BadImageError as error:
            log.warning("skipping an image that went bad after the start check: %s", error)
            return index
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        bad = [i for i in pool.map(one, range(len(records))) if i is not None]
    _fill_bad(array, bad, records)


def decoded_images(root: Path, records: list[ImageRecord], size: int, cache_dir: Path | None,
                   workers: int | None = None) -> np.ndarray:
    """All records as uint8 N x size x size x 3: read from the cache file when it exists, else decoded once and
    saved there atomically (or held in memory when cache_dir is None)."""
    workers = workers or min(16, os.cpu_count() or 1)
    shape = (len(records), size, size, 3)
    if cache_dir is None:
        array = np.empty(shape, np.uint8)
        decode_into(array, root, records, size, workers)
        return array
    path = cache_path(cache_dir, records, size)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            decode_into(array, root, records, size, workers)
            array.flush()
            del array
            os.replace(partial, path)
        except BaseException:  # a failed build (bad class, full disk, Ctrl-C...) leaves no half-written file
            partial.unlink(missing_ok=True)
            raise
    return np.load(path, mmap_mode="r")


def to_device(array: np.ndarray, device: torch.device, chunk: int = 512) -> torch.Tensor:
    """Copy an N x H x W x 3 uint8 array onto the device in chunks (pinned, non-blocking on CUDA)."""
    out = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(array), chunk):
        part = torch.from_numpy(np.array(array[start:start + chunk]))  # a writable copy of the (read-only) memmap
        if device.type == "cuda":
            part = part.pin_memory()
        out[start:start + chunk].copy_(part, non_blocking=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out
