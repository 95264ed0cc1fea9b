"""Peak memory and time of each export format, one process per format (so each peak is its own), with the ratio to
the first format's peak: issue 16's bound is <= 4 GB for MobileViT-XS at 256 px with the default calibration.

Usage: python scripts/bench_export_memory.py CHECKPOINT DATA [--calib 256] [--formats onnx-fp32,onnx-int8,...]
(DATA: the folder the checkpoint was trained on; for the released model, rebuild it with the `bmcell combine` line
in models/README.md and pass DIR/data.)"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FORMATS = "onnx-fp32,onnx-int8,executorch-fp32,executorch-int8"


def export_one(checkpoint: str, data: str, calib: int, name: str, out: str) -> None:
    """In this (child) process: export one format of the checkpoint, calibrated on `calib` training images."""
    import torch

    from bmcell.core.checkpoint import load_checkpoint
    from export.formats import FORMATS
    from export.formats.base import ExportInputs
    from export.pipeline import embedded_metadata, folded_model
    from export.samples import balanced_pick, checkpoint_split, load_unit_images

    loaded = load_checkpoint(Path(checkpoint))
    split = checkpoint_split(loaded, Path(data))
    calibration = load_unit_images(Path(data), balanced_pick(split.train, calib), loaded.image_size)
    inputs = ExportInputs(folded_model(loaded), calibration[:1], calibration, loaded.classes,
                          embedded_metadata(loaded))
    with torch.no_grad():
        FORMATS[name].export(inputs, Path(out) / FORMATS[name].filename())


def main() -> None:
    """One child process per format; print a table of seconds and peak resident memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--formats", default=DEFAULT_FORMATS)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        export_one(args.checkpoint, args.data, args.calib, args.one, args.out)
        return
    print(f"{args.checkpoint}, {args.calib} calibration images, one process per format")
    print("| format | seconds | peak RSS GB | vs first |\n|---|---:|---:|---:|")
    first = None
    with tempfile.TemporaryDirectory() as out:
        for name in args.formats.split(","):
            start = time.perf_counter()
            child = subprocess.Popen([sys.executable, __file__, args.checkpoint, args.data, "--calib", str(args.calib),
                                      "--one", name, "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(child.pid, 0)
            seconds, peak = time.perf_counter() - start, usage.ru_maxrss / 1e6  # ru_maxrss is in KiB on Linux
            if status != 0:
                print(f"| {name} | failed (status {status}): {child.stderr.read().decode()[-300:]} | | |")
                continue
            first = first or peak
            print(f"| {name} | {seconds:.1f} | {peak:.2f} | {peak / first:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
