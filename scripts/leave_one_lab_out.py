"""Leave-one-lab-out on a short CPU protocol: the release recipe trained on every lab of a `bmcell combine` folder
but one, for each lab in turn, and on all of them.

    python scripts/leave_one_lab_out.py MULTI OUT [--arch mobilevit_xxs] [--image-size 128] [--epochs 10]

MULTI: a `bmcell combine` folder (its split.csv names each image's source as the path's second part). Each run
trains --arch from scratch with the release's recipe (other-labs augmentation, outlier exposure 0.5,
--balance-sources, batch 32, lr 1e-3, one warm-up epoch, device data path) on the training side of the labs kept;
`bmcell crosslab` then measures its last epoch on every lab's held-out part (MULTI/heldout/LAB: the left-out lab's
cells are all unseen, its held-out part is used so that every row scores the same cells) and on synthesised
non-cell images. A lab with a class the others lack (PBC's erythroblast, ig, platelet) leaves a model without that
class when it is left out: crosslab counts those images but does not score them. Writes OUT/lolo.md and
OUT/lolo.json; finished runs are reused when rerun."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from crosslab_ablation import run, sources_only

RECIPE = ("--augment", "other-labs", "--outlier-exposure", "0.5", "--balance-sources", "--batch-size", "32",
          "--lr", "1e-3", "--warmup-epochs", "1", "--workers", "0", "--data-path", "device")


def labs_of(multi: Path) -> list[str]:
    """The sources of a combine folder, in their first appearance in split.csv."""
    rows = list(csv.reader(open(multi / "split.csv", newline="", encoding="utf-8")))[1:]
    return list(dict.fromkeys(path.split("/")[1] for path, _ in rows))


def without(multi: Path, out: Path, labs: list[str], left_out: str) -> Path:
    """The combine folder without left_out's images (links, the same split), made once."""
    if not (out / "split.csv").is_file():
        sources_only(multi, out, set(labs) - {left_out})
    return out


def measure(run_dir: Path, out: Path, multi: Path, labs: list[str]) -> dict:
    """crosslab of a run's last epoch on every lab's held-out part."""
    if not (out / "crosslab.json").is_file():
        folders = [arg for lab in labs for arg in ("--data", str(multi / "heldout" / lab))]
        run("crosslab", str(run_dir / "last.json"), *folders, "--out", str(out), "--non-cell", "160",
            "--workers", "1")
    return json.loads((out / "crosslab.json").read_text())


def main() -> None:
    """Train and measure each leave-one-lab-out run and the all-labs run; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multi", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="mobilevit_xxs", help="mobilevit_xxs, mobilevit_xs or mobilevit_s")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    labs = labs_of(args.multi)
    rows = []
    for left_out in [*labs, None]:
        name = f"without-{left_out}" if left_out else "all-labs"
        folder = without(args.multi, args.out / "folders" / name, labs, left_out) if left_out else args.multi
        run_dir = args.out / "runs" / name
        done = (run_dir / "last.json").is_file() and json.loads((run_dir / "last.json").read_text())["epoch"] \
            >= args.epochs
        if not done:
            run("train", "--data", str(folder / "data"), "--split", str(folder / "split.csv"), "--out",
                str(run_dir), "--arch", args.arch, "--image-size", str(args.image_size), "--epochs",
                str(args.epochs), *RECIPE, *(["--resume"] if (run_dir / "config.json").is_file() else []))
        report = measure(run_dir, args.out / "crosslab" / name, args.multi, labs)
        rows.append({"run": name, "left_out": left_out, "non_cell_unlike_training":
                     (report["non_cell"] or {}).get("unlike_training"),
                     **{f"{lab}_{key}": report["folders"][lab][key] for lab in labs
                        for key in ("images", "accuracy", "balanced_accuracy", "unlike_training")}})
    (args.out / "lolo.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| trained on | " + " | ".join(f"{lab} acc. (unlike training)" for lab in labs)
             + " | non-cell unlike training |", "|---|" + "---:|" * (len(labs) + 1)]
    for r in rows:
        cells = [(f"**{r[f'{lab}_accuracy']:.3f}** (left out)" if lab == r["left_out"] else
                  f"{r[f'{lab}_accuracy']:.3f}") + f" ({r[f'{lab}_unlike_training']:.2f})" for lab in labs]
        trained = "all labs" if r["left_out"] is None else " + ".join(lab for lab in labs if lab != r["left_out"])
        lines.append(f"| {trained} | " + " | ".join(cells) + f" | {r['non_cell_unlike_training']:.3f} |")
    lines.append("\nHeld-out images: " + ", ".join(f"{lab} {rows[-1][f'{lab}_images']}" for lab in labs))
    (args.out / "lolo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
