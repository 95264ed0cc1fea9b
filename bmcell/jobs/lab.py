"""A new lab: adapt a model with a few of the lab's labelled cells (`bmcell finetune`), and check a lab's
unlabelled photos against the model's training data (`bmcell check`). Both compare with the model's own images:
its training folder when at hand, else the release's sample set (export/samples.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bmcell.core.adapt import adaptation_images
from bmcell.core.checkpoint import Checkpoint
from bmcell.core.data.folder import check_images, list_image_files
from bmcell.core.fileio import atomic_write_json
from bmcell.core.finetune import (
    LAB_CELLS_DIR,
    Recipe,
    ReplayImages,
    finetune_checkpoint,
    read_lab_cells,
    top_features,
    top_logits,
    trunk_maps,
)
from bmcell.core.models import Top, Trunk
from bmcell.core.shift import MIN_CHECK_IMAGES, advice, check_photos, fit_reference
from export.samples import DEFAULT_CALIBRATION, MIN_GOLDEN, SAMPLES_DIR, balanced_pick, export_images

OWN_VALIDATION = 256  # validation images compared with (a balanced pick when the split has more)
CHECK_JSON = "check.json"
CHECK_MD = "check.md"


def own_images(checkpoint: Checkpoint, data: Path | None, say: Callable[[str], None]) -> ReplayImages:
    """The model's own training-side images (as export calibrates on) and up to OWN_VALIDATION validation images."""
    images = export_images(checkpoint, data, DEFAULT_CALIBRATION, MIN_GOLDEN, say)
    return ReplayImages(images.root, images.calibration, balanced_pick(images.validation, OWN_VALIDATION),
                        images.origin)


def finetune_run(checkpoint: Checkpoint, lab_folder: Path, out: Path, class_map: dict[str, str | None] | None,
                 data: Path | None, recipe: Recipe, folds: int, say: Callable[[str], None],
                 warn: Callable[[str], None]) -> tuple[Path, dict]:
    """Check the lab's cells, then fine-tune with replay of the model's own images; a release's sample set is
    carried into the new folder so that it exports with no data at hand, as the release did."""
    lab = read_lab_cells(lab_folder, checkpoint.classes, class_map, warn)
    replay = own_images(checkpoint, data, say)
    return finetune_checkpoint(checkpoint, lab, replay, out, recipe, folds, say, carried_samples(checkpoint))


def carried_samples(checkpoint: Checkpoint) -> tuple[Path, ...]:
    """The release's sample set, when the checkpoint is a release's, for a derived model's folder: it then exports
    with no data at hand, as the release does."""
    samples = checkpoint.run_dir / SAMPLES_DIR
    return (samples,) if samples.is_dir() else ()


def _lab_cells_bank(checkpoint: Checkpoint) -> tuple[Path, list] | None:
    """The cells a fine-tuned checkpoint learned from (its lab_cells/), as records; None for other checkpoints."""
    root = checkpoint.run_dir / LAB_CELLS_DIR
    if checkpoint.meta.get("finetuned_on") is None or not root.is_dir():
        return None
    records, _ = check_images(root, {f: f.split("/", 1)[0] for f in list_image_files(root)})
    return root, records


def check_run(checkpoint: Checkpoint, images: Path, data: Path | None, out: Path | None,
              say: Callable[[str], None], warn: Callable[[str], None]) -> dict:
    """Read a lab's unlabelled photos and report how far they are from the model's training data, the estimated
    accuracy and what to do next; check.json and check.md in out when given."""
    photos = adaptation_images(images, warn, MIN_CHECK_IMAGES, "a check")
    own = own_images(checkpoint, data, say)
    model = checkpoint.build_model()
    trunk, top = Trunk(model).eval(), Top(model).eval()
    classes, size, mean, std = checkpoint.classes, checkpoint.image_size, checkpoint.mean, checkpoint.std

    def maps(root: Path, records: list, labels: list[str]) -> torch.Tensor:
        return trunk_maps(trunk, root, records, labels, size, mean, std, 1)

    say(f"comparing {len(photos)} photos with {len(own.train)} training and {len(own.validation)} validation "
        f"images of the model ({own.origin})")
    banks = [top_features(top, maps(own.root, own.train, classes))]
    lab_cells = _lab_cells_bank(checkpoint)
    if lab_cells:
        banks.append(top_features(top, maps(lab_cells[0], lab_cells[1], classes)))
    validation = maps(own.root, own.validation, classes)
    reference = fit_reference(np.concatenate(banks), top_features(top, validation), top_logits(top, validation),
                              np.array([classes.index(r.label) for r in own.validation]), checkpoint.confidence)
    photo_maps = maps(images, photos, ["unlabelled"])
    report = check_photos(reference, top_features(top, photo_maps), top_logits(top, photo_maps),
                          checkpoint.confidence)
    report = {"checkpoint": checkpoint.run_dir.name, "images_folder": Path(images).name, **report,
              "paths": [p.path for p in photos], "classes": classes,
              "next": advice(report, str(checkpoint.run_dir.name)), "lab_cells_in_reference": bool(lab_cells)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / CHECK_JSON, report)
        (out / CHECK_MD).write_text("\n".join(summary_lines(report)) + "\n", encoding="utf-8")
    return report


def summary_lines(report: dict) -> list[str]:
    """The check in a few plain lines."""
    return [f"{report['images']} photos from {report['images_folder']} checked against {report['checkpoint']}",
            f"shift: {report['outside_share']:.0%} of them lie outside the model's training data "
            f"({report['expected_outside_share']:.0%} expected for photos like it): {report['verdict']}",
            f"estimated accuracy: about {report['estimated_accuracy']:.2f} (from confidence alone: "
            f"{report['atc_accuracy']:.2f}, which overestimates on shifted photos); answered with confidence: "
            f"{report['answered_share']:.0%}",
            *[f"next: {line}" for line in report["next"]]]
