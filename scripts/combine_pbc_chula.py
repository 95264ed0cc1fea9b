"""Build a two-source training set for the multi-source experiment of docs/RESULTS.md section 5: PBC (CellaVision)
and chula_wbc (another lab's Raspberry Pi camera), as one class-per-folder tree of symbolic links plus a split CSV
for `bmcell train --split`, and two evaluation folders.

PBC keeps the released model's split (models/mobilevit_xs-pbc8/split.json): --pbc-train and --pbc-val images per
class are drawn (seeded) from its two sides. chula_wbc is split by series (labels.csv's slide_or_series_id, never by
file): each series belongs to the class of most of its cells, and a class's smallest series are held out until they
hold at least --chula-val-share of its cells (skipping any series that would take more than half of them).
Writes OUT/data/<class>/{pbc,chula}/..., OUT/split.csv, OUT/eval-chula-heldout/<class>/... and
OUT/eval-pbc-val/<class>/... (every PBC validation image).
Usage: python scripts/combine_pbc_chula.py PBC CHULA OUT [--pbc-train 150] [--pbc-val 50] [--chula-val-share 0.25]"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

RELEASE_SPLIT = Path(__file__).resolve().parents[1] / "models" / "mobilevit_xs-pbc8" / "split.json"


def link(target: Path, link_path: Path) -> None:
    """A symbolic link at link_path to target (parents made)."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target.resolve())


def chula_heldout_series(rows: list[dict], share: float) -> set[str]:
    """Per class, its smallest series until they hold at least share of the class's cells, never more than half."""
    series_cells: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        series_cells[row["slide_or_series_id"]][row["label"]] += 1
    by_class: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for series, cells in series_cells.items():
        by_class[cells.most_common(1)[0][0]].append((sum(cells.values()), series))
    totals = Counter(row["label"] for row in rows)
    held: set[str] = set()
    for label, members in by_class.items():
        count = 0
        for size, series in sorted(members):
            if count >= share * totals[label]:
                break
            if count + size > totals[label] / 2:
                continue
            held.add(series)
            count += size
    return held


def main() -> None:
    """Write the combined tree, the split CSV and the evaluation folders."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pbc", type=Path)
    parser.add_argument("chula", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pbc-train", type=int, default=150)
    parser.add_argument("--pbc-val", type=int, default=50)
    parser.add_argument("--chula-val-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new folder")
    split_rows: list[tuple[str, str]] = []
    sides: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in json.loads(RELEASE_SPLIT.read_text())["files"]:
        sides[entry["label"], entry["subset"]].append(entry["path"])
        if entry["subset"] == "val":
            link(args.pbc / entry["path"], args.out / "eval-pbc-val" / entry["path"])
    for (label, subset), paths in sorted(sides.items()):
        chosen = sorted(paths)
        random.Random(f"{args.seed}:{label}:{subset}").shuffle(chosen)
        for path in chosen[:args.pbc_train if subset == "train" else args.pbc_val]:
            name = f"{label}/pbc/{Path(path).name}"
            link(args.pbc / path, args.out / "data" / name)
            split_rows.append((name, subset))
    rows = list(csv.DictReader(open(args.chula / "labels.csv", newline="", encoding="utf-8")))
    held = chula_heldout_series(rows, args.chula_val_share)
    for row in rows:
        name = f"{row['label']}/chula/{Path(row['file']).name}"
        subset = "val" if row["slide_or_series_id"] in held else "train"
        link(args.chula / row["file"], args.out / "data" / name)
        split_rows.append((name, subset))
        if subset == "val":
            link(args.chula / row["file"], args.out / "eval-chula-heldout" / row["file"])
    with open(args.out / "split.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "subset"), *split_rows])
    counts = Counter((name.split("/")[1], subset) for name, subset in split_rows)
    print(f"held-out chula series: {sorted(held)}; images per (source, subset): {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
