"""Which feature statistics tell pictures that are not cells from cells: the measurement behind novelty's
appearance distance (bmcell.core.novelty), rerunnable on any MobileViT checkpoint with its training folder:

    SKIMAGE_DATA=.../skimage/data python scripts/novelty_stages.py RUN [--data DIR] --heldout NAME=DIR ...

For each stage of the network, the per-channel mean of its feature maps, and their mean and spread, of 1,024 of the
model's training images (novelty.bank_pick) are the stored set; a picture's score is the cosine distance to the
nearest stored one (the pooled features the classifier reads, the same way: the content distance). Each score is
thresholded at the 95% quantile of the model's validation images; printed: the share of the packages' sample
photographs (scripts/novelty_eval.py --sample-photos) and of each --heldout folder's cells above it, and the same
for the larger of the content distance and each stage's mean-and-spread distance, each over its own quantile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from novelty_eval import folder_images, sample_photos  # noqa: E402

from bmcell.core.checkpoint import load_checkpoint  # noqa: E402
from bmcell.core.data.images import load_rgb  # noqa: E402
from bmcell.core.data.prepare import load_prepared  # noqa: E402
from bmcell.core.data.transforms import eval_transform  # noqa: E402
from bmcell.core.models import Top, Trunk  # noqa: E402
from bmcell.core.novelty import FLAG_QUANTILE, appearance, bank_pick, nearest_distance, unit_rows  # noqa: E402


@torch.no_grad()
def stage_features(trunk: Trunk, top: Top, transform, images) -> dict[str, np.ndarray]:
    """Per stage, the unit per-channel means ('mean') and those beside the unit spreads ('mean+spread'); and the
    pooled features ('content')."""
    rows: dict[str, list] = {}
    for start in range(0, len(images), 32):
        maps = trunk.stage_outputs(torch.stack([transform(im) for im in images[start:start + 32]]))
        for index, h in enumerate(maps):
            rows.setdefault(f"stage {index} mean", []).append(unit_rows(h.mean(dim=(2, 3))).numpy())
            rows.setdefault(f"stage {index} mean+spread", []).append(appearance(h).numpy())
        rows.setdefault("content", []).append(top.features(maps[-1]).numpy())
    return {name: np.concatenate(parts) for name, parts in rows.items()}


def main() -> None:
    """One table: a row per score, a column per image set."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="the model's training folder (default: the one it records)")
    parser.add_argument("--heldout", action="append", default=[], help="NAME=DIR: cells it was not trained on")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.run)
    model = checkpoint.build_model()
    trunk, top = Trunk(model).eval(), Top(model).eval()
    transform = eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std)
    data = load_prepared(checkpoint.data_folder(args.data), checkpoint.run_dir, checkpoint.split_sha256)
    sets = {"bank": [load_rgb(data.root / r.path) for r in bank_pick(data.train)],
            "validation": [load_rgb(data.root / r.path) for r in data.val], "photographs": sample_photos()}
    sets |= {spec.split("=", 1)[0]: folder_images(Path(spec.split("=", 1)[1])) for spec in args.heldout}
    features = {name: stage_features(trunk, top, transform, images) for name, images in sets.items()}
    scores = {kind: {name: nearest_distance(f[kind], features["bank"][kind]) for name, f in features.items()}
              for kind in features["bank"]}
    quantile = {kind: np.quantile(by_set["validation"], FLAG_QUANTILE) for kind, by_set in scores.items()}
    for kind in [k for k in scores if k.endswith("mean+spread")]:
        scores[f"larger of content and {kind}"] = {
            name: np.maximum(scores["content"][name] / quantile["content"], scores[kind][name] / quantile[kind])
            for name in sets}
        quantile[f"larger of content and {kind}"] = np.quantile(
            scores[f"larger of content and {kind}"]["validation"], FLAG_QUANTILE)
    columns = [name for name in sets if name not in ("bank", "validation")]
    print(f"Share above the validation images' {FLAG_QUANTILE:.0%} quantile ({checkpoint.run_dir.name}).\n")
    print("| score | " + " | ".join(f"{c} ({len(sets[c])})" for c in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for kind, by_set in scores.items():
        print(f"| {kind} | " + " | ".join(f"{np.mean(by_set[c] > quantile[kind]):.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
