"""Learning curves of `bmcell finetune` on labs it can be measured on, with the product's own code.

For each lab: draw k labelled cells per class (k in --k) from the lab's training side, fine-tune (the same
functions as `bmcell finetune`: frozen trunk, top trained with replay of the model's own images), and score the
lab's held-out side and the model's own PBC validation images; 3 draws each. The cross-validated estimate that
`finetune` reports is compared with the held-out truth at k = --cv-k. Trunk feature maps are computed once per
image and shared by every draw, so the curve costs minutes instead of hours.

    python scripts/finetune_curves.py --lab chula=mobilevit_xs-pbc8 --lab bccd=mobilevit_xs-pbc8-chula \
        --pbc-val DIR_OF_PBC_VALIDATION_IMAGES

Lab sides: chula_wbc's training series → its held-out series (the series split of the two-lab release, read from
that release's split.json); bccd split by source_image, half and half (seeded)."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.data.folder import check_images
from bmcell.core.finetune import (
    REPLAY_VIEWS,
    TRAIN_VIEWS,
    Recipe,
    out_of_fold_logits,
    top_logits,
    train_top,
    trunk_maps,
    wilson_interval,
)
from bmcell.core.models import Top, Trunk
from bmcell.jobs.lab import own_images

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def lab_sides(lab: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], Path]:
    """(training side, held-out side) as (relative path, class) under the lab's folder."""
    root = SHARED / ("chula_wbc" if lab == "chula" else lab)
    rows = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    if lab == "chula":
        split = json.loads((REPO / "models/mobilevit_xs-pbc8-chula/split.json").read_text())
        held = {Path(f["path"]).name for f in split["files"] if f["subset"] == "val" and "/chula/" in f["path"]}
        side = [Path(r["file"]).name in held for r in rows]
    else:
        sources = sorted({r["source_image"] for r in rows})
        order = np.random.default_rng(0).permutation(len(sources))
        held = {sources[i] for i in order[len(sources) // 2:]}
        side = [r["source_image"] in held for r in rows]
    pairs = [(r["file"], r["label"]) for r in rows]
    return [p for p, s in zip(pairs, side) if not s], [p for p, s in zip(pairs, side) if s], root


def draw(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k indices per class (all when fewer), classes with fewer than 5 cells left out as the lab would."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 5:
            picked += list(rng.choice(members, min(k, len(members)), replace=False))
    return np.sort(np.array(picked))


def records(root: Path, pairs: list[tuple[str, str]]):
    """Checked records of (path, class) pairs."""
    good, _ = check_images(root, dict(pairs))
    return good


def main() -> None:
    """Print one table per lab."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", action="append", required=True, help="LAB=RELEASE (chula or bccd)")
    parser.add_argument("--pbc-val", type=Path, required=True, help="PBC validation images, one folder per class")
    parser.add_argument("--k", default="5,10,20,50")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--cv-k", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for spec in args.lab:
        lab, release = spec.split("=")
        ckpt = load_checkpoint(REPO / "models" / release / "best.json")
        model = ckpt.build_model()
        trunk, source = Trunk(model).eval(), Top(model).eval()
        classes, size, mean, std = ckpt.classes, ckpt.image_size, ckpt.mean, ckpt.std
        train_pairs, test_pairs, root = lab_sides(lab)
        pool, test = records(root, train_pairs), records(root, test_pairs)
        pbc = records(args.pbc_val, [(p.relative_to(args.pbc_val).as_posix(), p.parent.name)
                                     for p in sorted(args.pbc_val.rglob("*")) if p.is_file()])
        replay = own_images(ckpt, None, lambda line: None)
        t0 = time.process_time()
        maps = trunk_maps(trunk, root, pool, classes, size, mean, std, TRAIN_VIEWS)
        test_maps = trunk_maps(trunk, root, test, classes, size, mean, std, 1)
        pbc_maps = trunk_maps(trunk, args.pbc_val, pbc, classes, size, mean, std, 1)
        replay_maps = trunk_maps(trunk, replay.root, replay.train, classes, size, mean, std, REPLAY_VIEWS)
        cache_cpu = time.process_time() - t0
        y = torch.tensor([classes.index(r.label) for r in pool])
        y_test = np.array([classes.index(r.label) for r in test])
        y_pbc = np.array([classes.index(r.label) for r in pbc])
        y_replay = torch.tensor([classes.index(r.label) for r in replay.train])

        def accuracy(top: Top, m: torch.Tensor, t: np.ndarray) -> float:
            return float((top_logits(top, m).argmax(1) == t).mean())

        print(f"\n{lab} with {release}: {len(pool)} cells to draw from, {len(test)} held out; trunk maps once: "
              f"{cache_cpu:.0f} s CPU; before: held-out {accuracy(source, test_maps, y_test):.3f}, "
              f"PBC validation {accuracy(source, pbc_maps, y_pbc):.3f} ({len(pbc)} images)")
        print("| k per class | cells (mean) | held-out accuracy, mean ± sd | PBC val. accuracy | CPU s per fine-tune |")
        print("|---:|---:|---:|---:|---:|")
        for k in [int(v) for v in args.k.split(",")]:
            held, own, cpu, cells = [], [], [], []
            for seed in range(args.draws):
                idx = torch.from_numpy(draw(y.numpy(), k, seed))
                t = time.process_time()
                top = train_top(source, maps[idx], y[idx], replay_maps, y_replay, Recipe(seed=seed))
                cpu.append(time.process_time() - t)
                held.append(accuracy(top, test_maps, y_test))
                own.append(accuracy(top, pbc_maps, y_pbc))
                cells.append(len(idx))
            print(f"| {k} | {np.mean(cells):.0f} | {np.mean(held):.3f} ± {np.std(held):.3f} | "
                  f"{np.mean(own):.3f} ± {np.std(own):.3f} | {np.mean(cpu):.0f} |", flush=True)
        print(f"\ncross-validated estimate (5-fold, as `bmcell finetune` reports) vs held-out truth, k = {args.cv_k}:")
        print("| draw | estimate [95% interval] | held-out truth | inside |")
        print("|---:|---:|---:|---|")
        for seed in range(args.draws):
            idx = torch.from_numpy(draw(y.numpy(), args.cv_k, seed))
            folds = min(5, int(np.bincount(y[idx].numpy())[np.bincount(y[idx].numpy()) > 0].min()))
            oof = out_of_fold_logits(source, maps[idx], y[idx], replay_maps, y_replay, Recipe(seed=seed), folds,
                                     lambda line: None)
            correct = int((oof.argmax(1) == y[idx].numpy()).sum())
            low, high = wilson_interval(correct, len(idx))
            truth = accuracy(train_top(source, maps[idx], y[idx], replay_maps, y_replay, Recipe(seed=seed)),
                             test_maps, y_test)
            print(f"| {seed} | {correct / len(idx):.3f} [{low:.3f}, {high:.3f}] | {truth:.3f} | "
                  f"{'yes' if low <= truth <= high else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
