"""Adapt a model to one lab from a few labelled cells per class (`bmcell finetune`).

The network's trunk stays frozen: each lab cell (and each replay image from the model's own training side) goes
through it once per view (the cell and three rotations/flips: a cell has no up), and only the last 1x1 convolution
and the classifier head are trained on those cached feature maps. The lab's cells teach their classes; the replay
images, with their labels and the source model's own answers (distillation), keep every class the lab did not
label. Because training the top is cheap, the whole procedure runs again once per fold of a stratified k-fold over
the lab's cells: the out-of-fold answers give an honest estimate of the accuracy on that lab's next cells and the
data to refit the confidence rule on."""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from bmcell.core.adapt import MIN_SIDE, too_small
from bmcell.core.checkpoint import Checkpoint, carried_meta, save_checkpoint
from bmcell.core.confidence import DEFAULT_COVERAGE, fit_confidence
from bmcell.core.crosslab import map_classes
from bmcell.core.data.dataset import CellImageDataset
from bmcell.core.data.folder import DatasetError, ImageRecord, check_images, list_image_files
from bmcell.core.data.label_maps import check_class_map
from bmcell.core.data.prepare import SPLIT_FILE
from bmcell.core.data.transforms import eval_transform
from bmcell.core.errors import BmcellError
from bmcell.core.fileio import atomic_write_json, staged_folder
from bmcell.core.metrics import classification_report, confusion_matrix
from bmcell.core.models import Top, Trunk
from bmcell.core.novelty import NoveltyFeatures, fit_novelty, novelty_features

MIN_PER_CLASS = 5  # fewer labelled cells of a class cannot be split into folds nor trusted to teach it
DEFAULT_FOLDS = 5
TRAIN_VIEWS = 4  # the cell, rotated 90, rotated 180 and flipped, rotated 270 and flipped
REPLAY_VIEWS = 2
FINETUNE_JSON = "finetune.json"  # the fine-tune's full report, beside the checkpoint


@dataclass(frozen=True)
class Recipe:
    """How the top is trained: epochs over the lab's views, learning rate, images per batch from the lab and as
    many from replay, and the replay weight."""

    epochs: int = 30
    lr: float = 5e-4
    batch_size: int = 32
    replay_weight: float = 3.0
    seed: int = 0


@dataclass(frozen=True)
class LabCells:
    """A lab's labelled cells mapped onto the model's classes, with what was skipped."""

    root: Path
    records: list[ImageRecord]  # labels are model classes
    mapping: dict[str, str | None]  # lab folder → model class (None: left out with --class-map)
    skipped: int


def read_lab_cells(root: Path, classes: list[str], class_map: dict[str, str | None] | None,
                   warn: Callable[[str], None], min_per_class: int = MIN_PER_CLASS) -> LabCells:
    """A lab's class-per-folder cells, checked before any work: every folder must name one of the model's classes
    (by name, synonym or --class-map), no image may sit under two classes, images must be cell photos, and each
    class needs min_per_class usable cells. Unreadable files are named and skipped."""
    root = Path(root)
    files = list_image_files(root)
    folder_class = {f: f.split("/", 1)[0] for f in files}
    mapping = map_classes(sorted(set(folder_class.values())), classes, class_map)
    check_class_map(class_map, set(mapping), str(root))
    unknown = sorted(c for c, target in mapping.items() if target is None and c not in (class_map or {}))
    if unknown:
        raise DatasetError(f"{root}: folder(s) {unknown} are not classes of this model ({', '.join(classes)}); "
                           "finetune teaches the model's own classes only: rename the folder, map it with "
                           "--class-map FILE (YAML 'their name: model class'), or leave it out with 'their name: null'")
    labelled = {f: mapping[c] for f, c in folder_class.items() if mapping[c] is not None}
    if not labelled:
        raise DatasetError(f"{root}: the class map leaves no folder to learn from")
    records, bad = check_images(root, labelled)
    if bad:
        warn(f"{root}: skipping {len(bad)} unusable image(s): "
             + "; ".join(f"{b.path} ({b.reason})" for b in bad[:5]) + (" ..." if len(bad) > 5 else ""))
    tiny = too_small(root, records)
    if tiny:
        raise DatasetError(f"{root}: {len(tiny)} image(s) are under {MIN_SIDE} px on a side (e.g. {tiny[:3]}); "
                           "label crops of single cells as the lab photographs them, not thumbnails")
    records = _without_duplicates(records, root, warn)
    counts = Counter(r.label for r in records)
    short = {c: counts[c] for c in sorted(set(labelled.values())) if counts[c] < min_per_class}
    if short:
        raise DatasetError(f"{root}: too few usable cells for {short}; label at least {min_per_class} cells of each "
                           "class you include (about 20 is better), or remove that class's folder")
    return LabCells(root, records, mapping, len(bad))


def _without_duplicates(records: list[ImageRecord], root: Path, warn: Callable[[str], None]) -> list[ImageRecord]:
    """An error for the same image (same bytes) under two classes; a repeat within one class is used once."""
    by_hash: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_hash.setdefault(record.sha256, []).append(record)
    clashes = [group for group in by_hash.values() if len({r.label for r in group}) > 1]
    if clashes:
        shown = "; ".join(" and ".join(f"{r.path} ({r.label})" for r in group) for group in clashes[:3])
        raise DatasetError(f"{root}: the same image is labelled as two classes: {shown}; keep each cell in one folder")
    repeats = sum(len(group) - 1 for group in by_hash.values())
    if repeats:
        warn(f"{root}: {repeats} image(s) are byte-identical copies of another in the same class; each is used once")
    return [group[0] for group in by_hash.values()]


def listing_sha256(records: list[ImageRecord]) -> str:
    """A digest of which images with which labels: the same cells give the same digest on any machine."""
    return hashlib.sha256("".join(f"{r.label}\t{r.sha256}\n" for r in sorted(
        records, key=lambda r: (r.label, r.sha256))).encode()).hexdigest()


def _views(batch: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The first `count` of: the batch, rotated 90, rotated 180 and flipped, rotated 270 and flipped."""
    views = [batch, torch.rot90(batch, 1, (2, 3)), torch.rot90(batch, 2, (2, 3)).flip(3),
             torch.rot90(batch, 3, (2, 3)).flip(2)]
    return views[:count]


@torch.no_grad()
def trunk_maps(trunk: Trunk, root: Path, records: list[ImageRecord], classes: list[str], image_size: int,
               mean: tuple[float, ...], std: tuple[float, ...], views: int, batch_size: int = 32) -> torch.Tensor:
    """N x views x C x H x W feature maps of the frozen trunk for each record's evaluation-preprocessed image."""
    dataset = CellImageDataset(root, records, classes, eval_transform(image_size, mean, std))
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        out.append(torch.stack([trunk(v) for v in _views(batch, views)], 1))
    return torch.cat(out)


def _novelty_features(model: nn.Module, parts: list[tuple[Path, list[ImageRecord]]], classes: list[str],
                      image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> NoveltyFeatures:
    """What the novelty distances compare, for the records of each (root, records) part in order."""
    transform = eval_transform(image_size, mean, std)
    return NoveltyFeatures.concatenate([
        novelty_features(model, DataLoader(CellImageDataset(root, records, classes, transform), batch_size=32),
                         torch.device("cpu")) for root, records in parts])


@torch.no_grad()
def top_logits(top: Top, maps: torch.Tensor) -> np.ndarray:
    """Logits of the first view of each image, in chunks."""
    top.eval()
    return torch.cat([top(chunk[:, 0]) for chunk in maps.split(128)]).numpy()


@torch.no_grad()
def top_features(top: Top, maps: torch.Tensor) -> np.ndarray:
    """Pooled features of the first view of each image, in chunks."""
    top.eval()
    return torch.cat([top.features(chunk[:, 0]) for chunk in maps.split(128)]).numpy()


def train_top(source: Top, maps: torch.Tensor, targets: torch.Tensor, replay_maps: torch.Tensor,
              replay_targets: torch.Tensor, recipe: Recipe) -> Top:
    """A copy of source trained on the lab's feature maps (classes weighted equally) and, in every step, as many
    replay maps held to their labels and to the source's answers. BatchNorm statistics stay the source's."""
    top = copy.deepcopy(source).eval()
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.no_grad():
        replay_answers = torch.softmax(source(replay_maps.flatten(0, 1)), 1).view(*replay_maps.shape[:2], -1)
    counts = torch.bincount(targets, minlength=replay_answers.shape[-1]).float()
    class_weight = torch.where(counts > 0, 1 / counts.clamp(min=1), counts)
    optimizer = torch.optim.AdamW(top.parameters(), lr=recipe.lr, weight_decay=0.0)
    views, size = maps.shape[1], recipe.batch_size
    steps = recipe.epochs * max(1, math.ceil(len(targets) * views / size))
    for _ in range(steps):
        i, v, j, w = (torch.randint(high, (size,), generator=generator)
                      for high in (len(targets), views, len(replay_targets), replay_maps.shape[1]))
        weight = class_weight[targets[i]]
        lab_loss = (F.cross_entropy(top(maps[i, v]), targets[i], reduction="none") * weight).sum() / weight.sum()
        replay_logits = top(replay_maps[j, w])
        replay_loss = F.cross_entropy(replay_logits, replay_targets[j]) + F.kl_div(
            F.log_softmax(replay_logits, 1), replay_answers[j, w], reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        (lab_loss + recipe.replay_weight * replay_loss).backward()
        optimizer.step()
    return top.eval()


def stratified_folds(targets: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per cell: each class's cells dealt round-robin over the folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(targets), dtype=np.int64)
    offset = 0
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def out_of_fold_logits(source: Top, maps: torch.Tensor, targets: torch.Tensor, replay_maps: torch.Tensor,
                       replay_targets: torch.Tensor, recipe: Recipe, folds: int,
                       progress: Callable[[str], None]) -> np.ndarray:
    """Each cell's logits from the procedure run without that cell's fold: what the lab's next cells will see."""
    fold = stratified_folds(targets.numpy(), folds, recipe.seed)
    logits = np.zeros((len(targets), source.head.fc.out_features), dtype=np.float32)
    for k in range(folds):
        held = torch.from_numpy(fold == k)
        trained = train_top(source, maps[~held], targets[~held], replay_maps, replay_targets, recipe)
        logits[held.numpy()] = top_logits(trained, maps[held])
        progress(f"fold {k + 1}/{folds} done")
    return logits


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion: honest at small n and near 0 or 1."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def set_top(model: nn.Module, top: Top) -> None:
    """Copy a trained top's weights into the full model (the same modules a Top wraps)."""
    own = Top(model)
    own.load_state_dict(top.state_dict())


@dataclass(frozen=True)
class ReplayImages:
    """Images from the model's own training data under root: training side (replayed while fine-tuning) and
    validation side (to measure what the fine-tune did to the model's own classes), and where they came from."""

    root: Path
    train: list[ImageRecord]
    validation: list[ImageRecord]
    origin: str


LAB_CELLS_DIR = "lab_cells"  # beside a fine-tuned checkpoint: the lab's cells it learned from, unchanged


def _scores(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Accuracy with its 95% interval, balanced accuracy and recall per class present."""
    report = classification_report(confusion_matrix(targets, logits.argmax(1), len(classes)), classes)
    correct = int((logits.argmax(1) == targets).sum())
    low, high = wilson_interval(correct, len(targets))
    return {"images": int(len(targets)), "accuracy": report["accuracy"], "interval": [low, high],
            "balanced_accuracy": report["balanced_accuracy"],
            "recall": {c: report["per_class"][c]["recall"] for c in classes if report["per_class"][c]["support"]}}


def finetune_checkpoint(checkpoint: Checkpoint, lab: LabCells, replay: ReplayImages, out: Path, recipe: Recipe,
                        folds: int, say: Callable[[str], None], carry: tuple[Path, ...] = ()) -> tuple[Path, dict]:
    """Fine-tune the checkpoint's top on the lab's cells with replay, estimate its accuracy on the lab by k-fold,
    refit the confidence rule on the out-of-fold answers, and write out/ (best.json + best.safetensors, the source's
    split.json, the lab's cells in lab_cells/, finetune.json, a copy of each folder in carry). Nothing is written
    unless all of it succeeds. Returns best.json and the report."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BmcellError(f"--out {out} exists and is not an empty folder; nothing is overwritten: choose a new folder")
    classes, counts = checkpoint.classes, Counter(r.label for r in lab.records)
    folds = min(folds, min(counts.values()))
    if folds < 2:
        raise BmcellError("cross-validation needs at least 2 folds: pass --folds 2 or more")
    model = checkpoint.build_model()
    trunk, source = Trunk(model).eval(), Top(model).eval()
    size, mean, std = checkpoint.image_size, checkpoint.mean, checkpoint.std
    say(f"reading {len(lab.records)} lab cells ({TRAIN_VIEWS} views each) and {len(replay.train)} + "
        f"{len(replay.validation)} images of the model's own data ({replay.origin}) through the frozen network")
    maps = trunk_maps(trunk, lab.root, lab.records, classes, size, mean, std, TRAIN_VIEWS)
    replay_maps = trunk_maps(trunk, replay.root, replay.train, classes, size, mean, std, REPLAY_VIEWS)
    check_maps = trunk_maps(trunk, replay.root, replay.validation, classes, size, mean, std, 1)
    targets = torch.tensor([classes.index(r.label) for r in lab.records])
    replay_targets = torch.tensor([classes.index(r.label) for r in replay.train])
    check_targets = np.array([classes.index(r.label) for r in replay.validation])
    say(f"{folds}-fold cross-validation on the lab's cells")
    oof = out_of_fold_logits(source, maps, targets, replay_maps, replay_targets, recipe, folds, say)
    final = train_top(source, maps, targets, replay_maps, replay_targets, recipe)
    set_top(model, final)
    lab_targets = targets.numpy()
    coverage = checkpoint.confidence.coverage_target if checkpoint.confidence else DEFAULT_COVERAGE
    confidence = fit_confidence(oof, lab_targets, coverage,
                                f"out-of-fold answers on {len(lab_targets)} labelled cells of {lab.root.name} "
                                f"({folds}-fold)")
    unlabelled = [c for c in classes if c not in counts]
    report = {
        "lab": lab.root.name, "cells": len(lab.records), "per_class": {c: counts[c] for c in classes if counts[c]},
        "cells_sha256": listing_sha256(lab.records), "classes_not_labelled": unlabelled,
        "skipped_files": lab.skipped, "folds": folds,
        "recipe": {"trained": "final 1x1 convolution and classifier head", "views": TRAIN_VIEWS,
                   "replay_images": len(replay.train), **asdict(recipe)},
        "lab_before": _scores(top_logits(source, maps), lab_targets, classes),
        "lab_cross_validated": _scores(oof, lab_targets, classes),
        "own_data_before": _scores(top_logits(source, check_maps), check_targets, classes),
        "own_data_after": _scores(top_logits(final, check_maps), check_targets, classes),
        "own_data": f"{len(replay.validation)} validation images of {replay.origin}",
        "source_weights_sha256": checkpoint.weights_sha256, "source": checkpoint.run_dir.name,
    }
    body = carried_meta(checkpoint.meta)
    body["metrics"] = {k: report["own_data_after"][k] for k in ("accuracy", "balanced_accuracy", "images")}
    novelty = fit_novelty(
        _novelty_features(model, [(replay.root, replay.train), (lab.root, lab.records)], classes, size, mean, std),
        _novelty_features(model, [(replay.root, replay.validation)], classes, size, mean, std),
    ) if checkpoint.novelty else None
    extra = {"novelty": novelty.to_meta()} if novelty else {}
    with staged_folder(out) as staging:
        shutil.copy2(checkpoint.run_dir / SPLIT_FILE, staging / SPLIT_FILE)
        for record in lab.records:
            dest = staging / LAB_CELLS_DIR / record.label / f"{record.sha256[:12]}-{Path(record.path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lab.root / record.path, dest)
        for folder in carry:
            shutil.copytree(folder, staging / folder.name)
        atomic_write_json(staging / FINETUNE_JSON, report)
        save_checkpoint(staging, "best", model, body | extra | {"confidence": confidence.to_dict(), "finetuned_on": {
            k: report[k] for k in ("lab", "cells", "per_class", "cells_sha256", "classes_not_labelled", "folds",
                                   "source_weights_sha256", "source")} | {
            "accuracy": report["lab_cross_validated"]["accuracy"],
            "interval": report["lab_cross_validated"]["interval"]}}, novelty.tensors() if novelty else None)
    return out / "best.json", report
