"""Real images for export, preprocessed by the artefacts' input contract: from the checkpoint's training folder and
split, or from the small sample set a released model carries (samples/), so a release exports with no data at hand.

Both sources pick the same images: calibration = balanced_pick(train, calibration_count) and golden =
balanced_pick(val, golden_count), which is what `bmcell release` stores in samples/. An export of a release from
its sample set and one from its rebuilt training folder therefore calibrate on the same images and are judged on
the same golden set."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.data.folder import ImageRecord
from bmcell.core.data.images import load_rgb
from bmcell.core.data.prepare import PreparedData, load_prepared
from bmcell.core.data.transforms import unit_transform
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import sha256_path

SAMPLES_DIR = "samples"  # beside a released checkpoint
SAMPLES_FILE = "samples.json"  # inside SAMPLES_DIR: which image serves which use, with its sha256
SAMPLES_FORMAT = "bmcell-samples"
SAMPLES_VERSION = 1
MIN_GOLDEN = 64
DEFAULT_CALIBRATION = 128  # int8 calibration images; `bmcell release` ships this many


class SampleSetError(BmcellError):
    """A release's sample set that is missing files, altered, or does not belong to the checkpoint."""


@dataclass(frozen=True)
class ExportImages:
    """The images an export uses, as records under root: int8 calibration (training side), the golden set and the
    images parity measures validation accuracy on (validation side), and where they came from, in words."""

    root: Path
    calibration: list[ImageRecord]
    golden: list[ImageRecord]
    validation: list[ImageRecord]
    origin: str


def checkpoint_split(checkpoint: Checkpoint, data: Path) -> PreparedData:
    """The checkpoint's train/val split, checking the split file's hash and that the images are under data."""
    return load_prepared(data, checkpoint.run_dir, checkpoint.split_sha256)


def balanced_pick(records: list[ImageRecord], count: int, seed: int = 0) -> list[ImageRecord]:
    """Up to count records taken round-robin over the classes, in a seeded, order-independent way; the first k of
    a pick of n > k are the pick of k."""
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


def golden_records(split: PreparedData, count: int, log: Callable[[str], None]) -> list[ImageRecord]:
    """count validation images, topped up from training to MIN_GOLDEN when the validation side is smaller."""
    if count < MIN_GOLDEN:
        raise BmcellError(f"the golden set needs at least {MIN_GOLDEN} images, got {count}")
    picked = balanced_pick(split.val, count)
    if len(picked) < MIN_GOLDEN:
        picked += balanced_pick(split.train, MIN_GOLDEN - len(picked), 1)
        log(f"the validation split has fewer than {MIN_GOLDEN} images: the golden set is topped up from training "
            f"to {len(picked)} images" + (" (the whole dataset)" if len(picked) < MIN_GOLDEN else ""))
    return picked


def folder_images(checkpoint: Checkpoint, data: Path, calibration_count: int, golden_count: int,
                  log: Callable[[str], None] = print) -> ExportImages:
    """Export images from the training folder: the split's whole validation side for accuracy."""
    split = checkpoint_split(checkpoint, data)
    return ExportImages(Path(data), balanced_pick(split.train, calibration_count),
                        golden_records(split, golden_count, log), split.val, f"the training folder {data}")


def _records(entries: object, where: Path) -> list[ImageRecord]:
    """samples.json's list of {path, label, sha256} as records, or a SampleSetError."""
    if not isinstance(entries, list):
        raise SampleSetError(f"{where}: calibration and validation must be lists of images")
    try:
        return [ImageRecord(str(e["path"]), str(e["label"]), str(e["sha256"])) for e in entries]
    except (TypeError, KeyError) as error:
        raise SampleSetError(f"{where}: malformed entry ({error}); restore the release's samples/ folder") from None


def read_sample_set(checkpoint: Checkpoint) -> dict | None:
    """The release's samples.json with its records checked (present, unaltered, of this split and these classes),
    or None when the checkpoint has no sample set."""
    folder = checkpoint.run_dir / SAMPLES_DIR
    path = folder / SAMPLES_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SampleSetError(f"{path}: unreadable ({error}); restore the release's samples/ folder") from None
    if not isinstance(payload, dict) or payload.get("format") != SAMPLES_FORMAT \
            or payload.get("format_version") != SAMPLES_VERSION:
        raise SampleSetError(f"{path}: not a {SAMPLES_FORMAT} v{SAMPLES_VERSION} file")
    if payload.get("split_sha256") != checkpoint.split_sha256:
        raise SampleSetError(f"{path} was made for another split than {checkpoint.json_path.name}'s (split sha256 "
                             "differs): it is not this model's sample set")
    calibration, validation = _records(payload.get("calibration"), path), _records(payload.get("validation"), path)
    golden = payload.get("golden")
    if not isinstance(golden, int) or not MIN_GOLDEN <= golden <= len(validation):
        raise SampleSetError(f"{path}: its golden count {golden!r} must be from {MIN_GOLDEN} to the "
                             f"{len(validation)} validation images it lists")
    problems = []
    for record in calibration + validation:
        file = folder / record.path
        if record.label not in checkpoint.classes or Path(record.path).is_absolute() or ".." in Path(record.path).parts:
            problems.append(f"{record.path}: not an image of this model's classes inside {SAMPLES_DIR}/")
        elif not file.is_file():
            problems.append(f"{record.path}: missing")
        elif sha256_path(file) != record.sha256:
            problems.append(f"{record.path}: changed (sha256 differs from {SAMPLES_FILE})")
    if problems:
        raise SampleSetError(f"{folder}: {len(problems)} sample(s) unusable, e.g. " + "; ".join(problems[:3])
                             + "; restore the release's samples/ folder (git checkout) or pass --data DIR")
    return payload | {"calibration": calibration, "validation": validation}


def sample_set_images(checkpoint: Checkpoint, sample_set: dict, calibration_count: int,
                      golden_count: int) -> ExportImages:
    """Export images from the release's sample set: its first calibration_count calibration images (at most what it
    has), its golden set, and all its validation images for accuracy. A --golden other than the default must be the
    sample set's own golden count."""
    golden = sample_set["golden"]
    if golden_count != MIN_GOLDEN and golden_count != golden:
        raise BmcellError(f"--golden {golden_count}: the release's sample set holds a golden set of {golden} "
                          "images; pass --data DIR (its training folder) for another size")
    calibration = sample_set["calibration"][:calibration_count]
    validation = sample_set["validation"]
    return ExportImages(checkpoint.run_dir / SAMPLES_DIR, calibration, validation[:golden], validation,
                        f"the release's sample set ({len(calibration)} calibration, {len(validation)} validation "
                        f"images in {checkpoint.run_dir.name}/{SAMPLES_DIR})")


def export_images(checkpoint: Checkpoint, data: Path | None, calibration_count: int, golden_count: int,
                  log: Callable[[str], None] = print) -> ExportImages:
    """The images to export with: data when given, else the folder the checkpoint was trained on when it is there,
    else the release's sample set; an error saying what to pass when there is none."""
    if data is not None:
        return folder_images(checkpoint, checkpoint.data_folder(data), calibration_count, golden_count, log)
    if checkpoint.recorded_data_folder() is not None:
        return folder_images(checkpoint, checkpoint.data_folder(), calibration_count, golden_count, log)
    sample_set = read_sample_set(checkpoint)
    if sample_set is None:
        checkpoint.data_folder()  # raises, naming the folder the checkpoint was trained on
    return sample_set_images(checkpoint, sample_set, calibration_count, golden_count)
