"""Cross-lab ablation on a short CPU protocol: which method makes a model hold up on another lab's camera.

Two sources: PBC (CellaVision) and chula_wbc (a Raspberry Pi camera, split by series), combined by `bmcell combine`
(PBC keeps the released model's split, --pbc-train/--pbc-val images per class). Every variant trains --arch
(MobileViT-XXS) from scratch at --image-size px on PBC alone (leave chula_wbc out: an unseen lab), on chula_wbc's
training series alone (leave PBC out), or on both (two sources); `bmcell crosslab` then measures its last epoch on
chula_wbc's held-out series and PBC's validation split. PBC-only BatchNorm variants are also calibrated with
`bmcell adapt` on chula_wbc's training-series photos (labels unused). Writes OUT/ablation.md and OUT/ablation.json;
finished variants are reused when rerun.
Usage: python scripts/crosslab_ablation.py PBC CHULA OUT [--arch mobilevit_xxs] [--epochs 10] [--image-size 128]
       [--variants a,b,...]"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

RELEASE_SPLIT = Path(__file__).resolve().parents[1] / "models" / "mobilevit_xs-pbc8" / "split.json"
# name: (sources, arch, augment, input_norm, outlier exposure weight, other train options)
VARIANTS = {
    "baseline": ("pbc", "{arch}", "cells", "dataset", "0", ""),
    "other-labs": ("pbc", "{arch}", "other-labs", "dataset", "0", ""),
    "other-labs+per-image": ("pbc", "{arch}", "other-labs", "per-image", "0", ""),
    "other-labs+groupnorm": ("pbc", "{arch}_gn", "other-labs", "dataset", "0", ""),
    "other-labs+groupnorm+per-image": ("pbc", "{arch}_gn", "other-labs", "per-image", "0", ""),
    "other-labs+outliers": ("pbc", "{arch}", "other-labs", "dataset", "0.5", ""),
    "chula-only": ("chula", "{arch}", "other-labs", "dataset", "0", ""),
    "chula-only+per-image": ("chula", "{arch}", "other-labs", "per-image", "0", ""),
    "two-sources": ("pbc+chula", "{arch}", "other-labs", "dataset", "0", ""),
    "two-sources+per-image": ("pbc+chula", "{arch}", "other-labs", "per-image", "0", ""),
    "two-sources+groupnorm+per-image": ("pbc+chula", "{arch}_gn", "other-labs", "per-image", "0", ""),
    "two-sources+outliers": ("pbc+chula", "{arch}", "other-labs", "dataset", "0.5", ""),
    "two-sources+balanced-sources": ("pbc+chula", "{arch}", "other-labs", "dataset", "0", "--balance-sources"),
}


def run(*args: str) -> None:
    """Run a bmcell command, stopping on failure."""
    print("+ bmcell " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "bmcell", *args], check=True)


def sources_only(multi: Path, out: Path, sources: set[str]) -> None:
    """Some sources' part of the combined folder (same files, same split, its sources.json) as a folder of its
    own."""
    rows = list(csv.reader(open(multi / "split.csv", newline="", encoding="utf-8")))[1:]
    kept = [(path, subset) for path, subset in rows if path.split("/")[1] in sources]
    for path, _ in kept:
        target = out / "data" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to((multi / "data" / path).resolve())
    with open(out / "split.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "subset"), *kept])
    shutil.copyfile(multi / "sources.json", out / "sources.json")


def chula_train_photos(multi: Path, out: Path) -> Path:
    """chula_wbc's training-series photos in one flat folder, labels dropped (what a lab would calibrate on)."""
    folder = out / "chula-train-photos"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        rows = list(csv.reader(open(multi / "split.csv", newline="", encoding="utf-8")))[1:]
        for path, subset in rows:
            if path.split("/")[1] == "chula" and subset == "train":
                (folder / Path(path).name).symlink_to((multi / "data" / path).resolve())
    return folder


def crosslab(checkpoint: Path, out: Path, multi: Path) -> dict:
    """The crosslab report of a checkpoint on chula_wbc's held-out series and PBC's validation split."""
    if not (out / "crosslab.json").is_file():
        run("crosslab", str(checkpoint), "--data", str(multi / "heldout" / "chula"), "--data",
            str(multi / "heldout" / "pbc"), "--out", str(out), "--non-cell", "160", "--workers", "1")
    return json.loads((out / "crosslab.json").read_text())


def row(name: str, variant: tuple, report: dict) -> dict:
    """The figures of one variant."""
    chula, pbc = report["folders"]["chula"], report["folders"]["pbc"]
    kept = chula.get("abstention") or {}
    return {"variant": name, "sources": variant[0], "arch": variant[1], "augment": variant[2],
            "input_norm": variant[3], "outlier_exposure": variant[4], "chula_accuracy": chula["accuracy"],
            "chula_balanced_accuracy": chula["balanced_accuracy"], "chula_macro_f1": chula["macro_f1"],
            "chula_majority_baseline": chula["majority_baseline"], "chula_answered": kept.get("coverage"),
            "chula_accuracy_answered": kept.get("accuracy_kept"), "pbc_accuracy": pbc["accuracy"],
            "pbc_macro_f1": pbc["macro_f1"], "non_cell_flagged": (report["non_cell"] or {}).get("flagged")}


def main() -> None:
    """Build the folders, train and measure every variant, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pbc", type=Path)
    parser.add_argument("chula", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pbc-train", type=int, default=100)
    parser.add_argument("--pbc-val", type=int, default=50)
    parser.add_argument("--arch", default="mobilevit_xxs", help="mobilevit_xxs, mobilevit_xs or mobilevit_s")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    multi = args.out / "multi"
    if not multi.is_dir():
        run("combine", str(multi), "--source", f"pbc={args.pbc}", "--split", f"pbc={RELEASE_SPLIT}", "--cap",
            f"pbc={args.pbc_train},{args.pbc_val}", "--source", f"chula={args.chula}", "--groups",
            f"chula={args.chula / 'labels.csv'}:slide_or_series_id")
    for source in ("pbc", "chula"):
        if not (args.out / f"{source}-only").is_dir():
            sources_only(multi, args.out / f"{source}-only", {source})
    photos = chula_train_photos(multi, args.out)
    rows = []
    for name in args.variants.split(","):
        sources, arch, augment, input_norm, outliers, extra = variant = \
            tuple(v.format(arch=args.arch) for v in VARIANTS[name])
        folder = multi if sources == "pbc+chula" else args.out / f"{sources}-only"
        run_dir = args.out / "runs" / name
        if not (run_dir / "last.json").is_file() or json.loads((run_dir / "last.json").read_text())["epoch"] \
                < args.epochs:
            run("train", "--data", str(folder / "data"), "--split", str(folder / "split.csv"), "--out", str(run_dir),
                "--arch", arch, "--augment", augment, "--input-norm", input_norm, "--outlier-exposure", outliers,
                "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--batch-size", "32",
                "--warmup-epochs", "1", *extra.split(),
                "--workers", "0", "--data-path", "device", *(["--resume"] if (run_dir / "config.json").is_file()
                                                             else []))
        # the last epoch, so no epoch is picked on a validation split that holds chula_wbc series
        rows.append(row(name, variant, crosslab(run_dir / "last.json", args.out / "crosslab" / name, multi)))
        if arch.endswith("_gn") or sources != "pbc":
            continue
        adapted = args.out / "runs" / f"{name}+adabn"
        if not (adapted / "best.json").is_file():
            run("adapt", str(run_dir / "last.json"), "--images", str(photos), "--out", str(adapted))
        rows.append(row(f"{name} + AdaBN on chula training photos", variant,
                        crosslab(adapted, args.out / "crosslab" / f"{name}+adabn", multi)))
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| variant | sources | chula held-out acc. | bal. acc. | macro-F1 | majority | answered | acc. answered "
             "| PBC val acc. | non-cell flagged |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = {k: ("–" if v is None else f"{v:.3f}") for k, v in r.items() if isinstance(v, float) or v is None}
        lines.append(f"| {r['variant']} | {r['sources']} | {f['chula_accuracy']} | {f['chula_balanced_accuracy']} | "
                     f"{f['chula_macro_f1']} | {f['chula_majority_baseline']} | {f['chula_answered']} | "
                     f"{f['chula_accuracy_answered']} | {f['pbc_accuracy']} | {f['non_cell_flagged']} |")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
