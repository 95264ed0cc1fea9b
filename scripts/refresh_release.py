"""Bring a release made before 2026-12 up to date: add the sample images `bmcell export` needs (samples/: int8
calibration, golden set and validation images of its own split) and remove the paths of the machine that made it
from its metadata (`bmcell release` now does both itself). The weights, split and reference logits are unchanged.

Usage: python scripts/refresh_release.py models/NAME --data DIR [--attribution TEXT]
(DIR: the folder the release was trained on; for models/mobilevit_xs-pbc8-chula, rebuild it with the `bmcell combine`
line in models/README.md and pass DIR/data.)"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bmcell.core.checkpoint import load_checkpoint
from bmcell.jobs.release import REFERENCE_LOGITS_FILE, make_release_portable, write_sample_set
from export.samples import SAMPLES_DIR, checkpoint_split


def main() -> None:
    """Write samples/ into the release and make its metadata portable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--attribution", default="")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.release)
    val = {record.path: record for record in checkpoint_split(checkpoint, args.data).val}
    reference = json.loads((args.release / REFERENCE_LOGITS_FILE).read_text(encoding="utf-8"))
    shutil.rmtree(args.release / SAMPLES_DIR, ignore_errors=True)
    payload = write_sample_set(checkpoint, args.data, [val[image["path"]] for image in reference["images"]],
                               args.release, args.attribution, args.release.name)
    make_release_portable(args.release)
    print(f"{args.release}: {len(payload['calibration'])} calibration and {len(payload['validation'])} validation "
          f"images in {SAMPLES_DIR}/; metadata without machine paths")


if __name__ == "__main__":
    main()
