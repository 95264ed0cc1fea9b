"""`bmcell check`'s estimate against the truth: run the check (labels ignored) on labelled lab folders and compare
its shift verdict and estimated accuracy with the accuracy measured from the labels.

The check fits nothing on any lab: its distance radius and ATC threshold come from the model's own validation
images, so every lab here is left out of the estimator's fitting by construction.

    python scripts/check_estimates.py --model mobilevit_xs-pbc8 --model mobilevit_xs-pbc8-chula \
        --lab pbc-val=DIR --lab chula=DIR --lab bccd=DIR"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.crosslab import map_classes
from bmcell.jobs.lab import check_run

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """One table row per model and lab."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a release under models/")
    parser.add_argument("--lab", action="append", required=True, help="NAME=DIR of class-per-folder images")
    args = parser.parse_args()
    print("| model | lab | images | true accuracy | estimate | error | confidence alone (ATC) | outside share "
          "| verdict |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for model in args.model:
        ckpt = load_checkpoint(REPO / "models" / model / "best.json")
        for spec in args.lab:
            name, folder = spec.split("=", 1)
            report = check_run(ckpt, Path(folder), None, None, lambda line: None, lambda line: None)
            mapping = map_classes(sorted({p.split("/", 1)[0] for p in report["paths"]}), ckpt.classes)
            truth = np.array([ckpt.classes.index(mapping[p.split("/", 1)[0]]) for p in report["paths"]])
            accuracy = float((np.array(report["per_image"]["predicted"]) == truth).mean())
            error = report["estimated_accuracy"] - accuracy
            print(f"| {model} | {name} | {report['images']} | {accuracy:.3f} | {report['estimated_accuracy']:.3f} | "
                  f"{error:+.3f} | {report['atc_accuracy']:.3f} | {report['outside_share']:.3f} | "
                  f"{report['verdict']} |", flush=True)


if __name__ == "__main__":
    main()
