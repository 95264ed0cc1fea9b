"""Where `bmcell export --target T` of a checkpoint spends its time, before and after issue 20, in one run, with the
ratio: each artefact's export, the golden set's reference logits, and parity (golden set and validation accuracy).

before: what export did at acfc35f: 256 int8 calibration images from the training folder (DATA), each ORT-format
        file exported and calibrated again instead of converted from the ONNX file, and validation accuracy over
        the whole validation split of DATA;
after:  what it does now on a release with no data folder: the release's sample set (128 calibration images, 128
        validation images), ORT files converted from the ONNX files of the same export.
The artefacts of both legs are the same formats; only the images and the ORT route differ.

Usage: python scripts/bench_export_time.py [CHECKPOINT] --target web [--data DIR] [--legs before,after]
(CHECKPOINT defaults to the released model; DIR, needed for the before leg: its training folder, for the released
model rebuilt with the `bmcell combine` line in models/README.md.)"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bmcell.core.checkpoint import Checkpoint, load_checkpoint
from bmcell.jobs.release import DEFAULT_MODEL
from export.manifest import MANIFEST
from export.parity import run_parity
from export.pipeline import export_checkpoint, validation_set
from export.samples import ExportImages, export_images, folder_images
from export.targets import select_formats

BEFORE_CALIBRATION = 256


def timed_leg(checkpoint: Checkpoint, images: ExportImages, target: str, separate_ort: bool, out: Path) -> dict:
    """Seconds per artefact, for the reference logits of the golden set, for loading the validation images with
    their reference accuracy, and for parity; separate_ort exports each ORT file in an export of its own."""
    formats = select_formats([target], "all")
    groups = [[f for f in formats if f.suffix != ".ort"]] + [[f] for f in formats if f.suffix == ".ort"] \
        if separate_ort else [formats]
    seconds: dict[str, float] = {}
    total_start = time.perf_counter()
    folders = []
    for index, group in enumerate(groups):
        folders.append(out / f"export-{index}")
        export_checkpoint(checkpoint, group, folders[-1], images, lambda line: None)
        for entry in json.loads((folders[-1] / MANIFEST).read_text(encoding="utf-8"))["artefacts"]:
            seconds[entry["name"]] = entry["export_seconds"]
    exports = time.perf_counter() - total_start
    seconds["loading images, golden set reference logits, manifests"] = exports - sum(seconds.values())
    start = time.perf_counter()
    validation = validation_set(checkpoint, images)
    seconds["validation images: loading and reference accuracy"] = time.perf_counter() - start
    start = time.perf_counter()
    for folder in folders:
        run_parity(folder, validation, lambda line: None)
    seconds["parity (golden set and validation accuracy)"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - total_start
    print(f"  {len(images.calibration)} calibration and {len(images.validation)} validation images from "
          f"{images.origin}")
    return seconds


def main() -> None:
    """Run the legs and print one table with the after/before ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--target", default="web")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--legs", default="before,after")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    legs = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "before" in args.legs:
            if args.data is None:
                parser.error("the before leg needs --data DIR (the training folder)")
            images = folder_images(checkpoint, args.data, BEFORE_CALIBRATION, 64)
            legs["before"] = timed_leg(checkpoint, images, args.target, True, Path(tmp) / "before")
        if "after" in args.legs:
            images = export_images(checkpoint, None, 128, 64)
            legs["after"] = timed_leg(checkpoint, images, args.target, False, Path(tmp) / "after")
    rows = list(dict.fromkeys(key for leg in legs.values() for key in leg))
    print(f"| {args.target}: step | " + " | ".join(f"{leg} s" for leg in legs) + (" | after/before |" if len(legs) == 2
                                                                                else " |"))
    print("|---|" + "---:|" * (len(legs) + (len(legs) == 2)))
    for row in rows:
        values = [legs[leg].get(row) for leg in legs]
        cells = " | ".join("-" if v is None else f"{v:.1f}" for v in values)
        ratio = f" | {values[1] / values[0]:.2f}x |" if len(legs) == 2 and None not in values and values[0] else \
            (" | - |" if len(legs) == 2 else " |")
        print(f"| {row} | {cells}{ratio}")


if __name__ == "__main__":
    main()
