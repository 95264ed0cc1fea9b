"""The per-image novelty signal against the alternatives, on images a model never trained on:

    python scripts/novelty_eval.py RUN --known pbc-val=DIR [--unknown NAME=DIR ...] [--photos DIR | --sample-photos]

RUN: a run or release whose checkpoint has novelty statistics (`bmcell train` fits them) and whose training folder
is at hand (--data DIR for a release; its validation split fits every method's threshold). --known: cells of the
model's classes that it was not trained on (e.g. PBC validation originals: how often a known cell is flagged).
--unknown: cells of a kind without a class (the class a model was trained without) or of another lab, class folders
or not. --photos: a folder of pictures that are not cells; --sample-photos takes the sample photographs bundled
with installed Python packages (matplotlib, scikit-learn, scikit-image when its data folder is at hand:
SKIMAGE_DATA) and four seeded crops of each, plus every fifth face of scikit-image's LFW subset.

Each method flags the same share (novelty.FLAG_QUANTILE) of the model's own validation images: novelty (what
every artefact computes: the larger of the content and appearance distances, bmcell.core.novelty), the content
distance alone (the cosine distance of the pooled features to the nearest stored training image: novelty before
the appearance distance), the calibrated top probability ("uncertain"), the energy score (-logsumexp of the logits)
and a Mahalanobis distance (class means and one shared covariance of unit feature vectors, from the same stored
training images). Prints a Markdown table of the shares flagged and, against the first --known set, one of each
method's AUROC (threshold-free) and one of the shares flagged at the threshold that flags 5% of that set (the
operating point of issue 22's targets, read off the measured set itself: analysis, not a fitted threshold)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.confidence import calibrated
from bmcell.core.data.folder import list_images_anywhere
from bmcell.core.data.images import BadImageError, load_rgb
from bmcell.core.data.prepare import load_prepared
from bmcell.core.data.transforms import eval_transform
from bmcell.core.novelty import FLAG_QUANTILE, bank_pick, nearest_distance, split_output, unit_rows

PACKAGE_PHOTO_DIRS = ("matplotlib/mpl-data/sample_data", "sklearn/datasets/images")
SKIMAGE_DATA = os.environ.get("SKIMAGE_DATA", "")  # scikit-image's skimage/data folder (pip download scikit-image)


def sample_photos(crops: int = 4, seed: int = 0) -> list[Image.Image]:
    """Photographs bundled with installed packages, each whole and as `crops` seeded square crops."""
    import site

    folders = [Path(root) / sub for root in site.getsitepackages() for sub in PACKAGE_PHOTO_DIRS]
    folders += [Path(SKIMAGE_DATA)] if SKIMAGE_DATA else []
    rng, photos = np.random.default_rng(seed), []
    for path in sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir()
                       if p.suffix in (".png", ".jpg") and p.name != "cell.png"):
        image = Image.open(path).convert("RGB")
        photos.append(image)
        for _ in range(crops):
            side = int(min(image.size) * rng.uniform(0.25, 0.7))
            if side >= 32:
                x, y = rng.integers(0, image.width - side + 1), rng.integers(0, image.height - side + 1)
                photos.append(image.crop((x, y, x + side, y + side)))
    faces = Path(SKIMAGE_DATA) / "lfw_subset.npy"
    if SKIMAGE_DATA and faces.is_file():
        photos += [Image.fromarray((face * 255).astype(np.uint8)).convert("RGB") for face in np.load(faces)[::5]]
    return photos


def folder_images(folder: Path) -> list[Image.Image]:
    """Every readable image under a folder, in class folders or not."""
    images = []
    for path in list_images_anywhere(folder):
        try:
            images.append(load_rgb(Path(folder) / path))
        except BadImageError:
            pass
    return images


class Scorer:
    """A checkpoint's pooled features, logits and novelty for pictures, and every method's score."""

    def __init__(self, run: Path, data: Path | None = None) -> None:
        self.checkpoint = load_checkpoint(run)
        if self.checkpoint.novelty is None:
            raise SystemExit(f"{run} has no novelty statistics: train it with this bmcell")
        self.model = self.checkpoint.scored_model()
        self.transform = eval_transform(self.checkpoint.image_size, self.checkpoint.mean, self.checkpoint.std)
        data = load_prepared(self.checkpoint.data_folder(data), self.checkpoint.run_dir, self.checkpoint.split_sha256)
        root = data.root
        bank = self.outputs([load_rgb(root / r.path) for r in bank_pick(data.train)])
        labels = np.array([self.checkpoint.classes.index(r.label) for r in bank_pick(data.train)])
        self.fit_mahalanobis(bank[0], labels)
        validation = self.outputs([load_rgb(root / r.path) for r in data.val])
        self.thresholds = {name: float(np.quantile(score, FLAG_QUANTILE))
                           for name, score in self.scores(validation).items()}

    @torch.no_grad()
    def outputs(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pooled features, logits and novelty of the pictures."""
        features, outputs = [], []
        hook = self.model.top.head.fc.register_forward_hook(lambda m, args, out: features.append(args[0].numpy()))
        for start in range(0, len(images), 32):
            outputs.append(self.model(torch.stack([self.transform(im) for im in images[start:start + 32]])).numpy())
        hook.remove()
        logits, novelty = split_output(np.concatenate(outputs), len(self.checkpoint.classes))
        return np.concatenate(features), logits, novelty

    def fit_mahalanobis(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Class means and the inverse of one shared covariance (10% shrinkage) of unit feature vectors."""
        unit = unit_rows(torch.from_numpy(features)).numpy().astype(np.float64)
        classes = np.unique(labels)
        self.means = np.stack([unit[labels == c].mean(0) for c in classes])
        centred = unit - self.means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(centred)
        covariance = 0.9 * covariance + 0.1 * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
        self.precision = np.linalg.inv(covariance)

    def scores(self, outputs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """Each method's score, higher meaning more unlike the training images."""
        features, logits, novelty = outputs
        unit = unit_rows(torch.from_numpy(features)).numpy().astype(np.float64)
        probabilities, _ = calibrated(self.checkpoint.confidence, logits)
        shifted = logits.max(1, keepdims=True)
        differences = unit[:, None, :] - self.means[None]
        mahalanobis = np.einsum("ncd,de,nce->nc", differences, self.precision, differences).min(1)
        return {"novelty (in the graph)": novelty,
                "content distance alone": nearest_distance(features, self.checkpoint.novelty.bank),
                "calibrated top probability": -probabilities.max(1),
                "energy": -(shifted[:, 0] + np.log(np.exp(logits - shifted).sum(1))),
                "Mahalanobis": mahalanobis}

    def flagged(self, scores: dict[str, np.ndarray]) -> dict[str, float]:
        """Each method's share of pictures flagged, from their scores."""
        return {name: float(np.mean(score > self.thresholds[name])) for name, score in scores.items()}


def auroc(known: np.ndarray, other: np.ndarray) -> float:
    """Probability that a picture of `other` scores higher than one of `known` (ties count half)."""
    ordered = np.sort(known)
    below = np.searchsorted(ordered, other, side="left")
    tied = np.searchsorted(ordered, other, side="right") - below
    return float((below + 0.5 * tied).sum() / (len(known) * len(other)))


def print_table(title: str, methods: list[str], rows: list[tuple[str, int, dict[str, float]]]) -> None:
    """One Markdown table: a row per image set, a column per method."""
    print(f"{title}\n\n| images | n | " + " | ".join(methods) + " |")
    print("|---|---:|" + "---:|" * len(methods))
    for name, count, values in rows:
        print(f"| {name} | {count} | " + " | ".join(f"{values[m]:.3f}" for m in methods) + " |")
    print()


def main() -> None:
    """One row per image set, one column per method."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="the model's training folder (default: the one it records; a "
                        "release records none)")
    parser.add_argument("--known", action="append", default=[], help="NAME=DIR: cells of the model's classes")
    parser.add_argument("--unknown", action="append", default=[], help="NAME=DIR: cells it has no class for")
    parser.add_argument("--photos", type=Path, help="a folder of photographs that are not cells")
    parser.add_argument("--sample-photos", action="store_true", help="the installed packages' sample photographs")
    args = parser.parse_args()
    scorer = Scorer(args.run, args.data)
    sets = [(spec.split("=", 1)[0] + " (known classes)", folder_images(Path(spec.split("=", 1)[1])))
            for spec in args.known]
    sets += [(spec.split("=", 1)[0] + " (no class)", folder_images(Path(spec.split("=", 1)[1])))
             for spec in args.unknown]
    if args.photos:
        sets.append((f"photographs in {args.photos.name} (not cells)", folder_images(args.photos)))
    if args.sample_photos:
        sets.append(("packages' sample photographs (not cells)", sample_photos()))
    methods = list(scorer.thresholds)
    scores = [(name, len(images), scorer.scores(scorer.outputs(images))) for name, images in sets]
    print_table(f"Flagged share; every method flags {1 - FLAG_QUANTILE:.0%} of {scorer.checkpoint.run_dir.name}'s "
                "validation images.", methods, [(name, n, scorer.flagged(s)) for name, n, s in scores])
    if args.known:  # threshold-free, and at the operating point of the first known set
        known = scores[0][2]
        at_known = {m: float(np.quantile(known[m], FLAG_QUANTILE)) for m in methods}
        others = scores[1:]
        print_table(f"AUROC against {scores[0][0]}: the chance that a picture of the set scores above one of it.",
                    methods, [(name, n, {m: auroc(known[m], s[m]) for m in methods}) for name, n, s in others])
        print_table(f"Flagged share with each method's threshold set to flag {1 - FLAG_QUANTILE:.0%} of "
                    f"{scores[0][0]} itself (an operating point read off the measured set: analysis, not a fit).",
                    methods, [(name, n, {m: float(np.mean(s[m] > at_known[m])) for m in methods})
                              for name, n, s in others])

if __name__ == "__main__":
    main()
