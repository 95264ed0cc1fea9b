"""Per-image novelty: how unlike every training image a picture is, computed inside the model graph, so that the
float model, every exported artefact and every app flag the same pictures.

novelty = (1 - the largest cosine similarity between the picture's pooled feature vector and those of BANK_IMAGES
of the model's own training images) / radius, where radius is the FLAG_QUANTILE quantile of that distance over the
validation images. At or above THRESHOLD (1.0) the picture "does not look like a cell this model knows": not a
cell, a kind of cell without a class (a blast, a smudge cell), or a microscope far from all the training labs.
About 1 - FLAG_QUANTILE of validation-like cells are flagged by construction. Chosen against the energy score,
class-conditional Mahalanobis distance and the calibrated top probability on held-out classes and real non-cell
photographs (docs/crosslab.md, scripts/novelty_eval.py)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bmcell.core.data.folder import ImageRecord
from bmcell.core.models import EXTRA_TENSORS_PREFIX, Top, Trunk

BANK_IMAGES = 1024  # training images whose features the graph stores (384 floats each for MobileViT-XS)
FLAG_QUANTILE = 0.95
THRESHOLD = 1.0
MIN_RADIUS = 0.01  # cosine distance; below it (a barely trained model whose features all look alike) novelty would
# only magnify rounding: a trained MobileViT-XS's radius is about 0.05 (PBC validation images' 95% quantile)
UNKNOWN_TEXT = "does not look like a cell this model knows"  # what every app and `bmcell predict` answer then
BANK_KEY = f"{EXTRA_TENSORS_PREFIX}bank"  # the stored features' tensor in a checkpoint's safetensors
RULE = ("novelty = (1 - the largest cosine similarity of the picture's pooled features to the model's training "
        "images) / radius; at or above the threshold the picture does not look like a cell this model knows")


@dataclass(frozen=True)
class Novelty:
    """The training images' unit feature vectors and the distance that FLAG_QUANTILE of validation images stay
    within."""

    bank: torch.Tensor  # images x features, unit rows, float32
    radius: float
    validation_images: int
    flagged_on_validation: float

    def to_meta(self) -> dict:
        """The checkpoint metadata's "novelty" block (the bank itself is stored as a tensor, BANK_KEY)."""
        return {"radius": self.radius, "bank_images": int(self.bank.shape[0]), "quantile": FLAG_QUANTILE,
                "threshold": THRESHOLD, "validation_images": self.validation_images,
                "flagged_on_validation": self.flagged_on_validation, "rule": RULE}

    @classmethod
    def from_parts(cls, meta: dict, bank: torch.Tensor) -> Novelty:
        """Rebuild from a checkpoint's metadata block and stored bank."""
        return cls(bank.float(), float(meta["radius"]), int(meta["validation_images"]),
                   float(meta["flagged_on_validation"]))


def split_output(output: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A model's output rows → (logits, novelty or None when the output has no novelty column)."""
    output = np.asarray(output)
    return (output[:, :classes], output[:, classes]) if output.shape[1] == classes + 1 else (output, None)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


class NoveltyDistance(nn.Module):
    """Pooled features → novelty: cosine distance to the nearest stored training image over the radius. A module of
    its own, so quantisers can be told to leave it in float (its differences are finer than int8's steps)."""

    def __init__(self, novelty: Novelty) -> None:
        super().__init__()
        self.register_buffer("bank_t", unit_rows(novelty.bank.float()).T.contiguous())
        self.register_buffer("inverse_radius", torch.tensor(1.0 / novelty.radius, dtype=torch.float32))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """N x 1 novelty scores."""
        unit = pooled * torch.rsqrt((pooled * pooled).sum(dim=1, keepdim=True) + 1e-12)  # plain ops every runtime has
        similarity = (unit @ self.bank_t).amax(dim=1, keepdim=True)
        return (1.0 - similarity) * self.inverse_radius


class NoveltyScored(nn.Module):
    """A MobileViT whose output is its logits followed by one more column, the picture's novelty: N x (C + 1).
    The logits are computed by the same operations as the plain network's, so they are identical."""

    def __init__(self, model: nn.Module, novelty: Novelty) -> None:
        super().__init__()
        self.trunk, self.top, self.novelty = Trunk(model), Top(model), NoveltyDistance(novelty)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, then novelty, per image."""
        pooled = self.top.features(self.trunk(x))
        return torch.cat([self.top.head.fc(pooled), self.novelty(pooled)], dim=1)


@torch.no_grad()
def pooled_features(model: nn.Module, batches: Iterable, device: torch.device) -> np.ndarray:
    """The pooled feature vector the classifier reads, for every image of (images, targets) batches."""
    trunk, top = Trunk(model).to(device).eval(), Top(model).to(device).eval()
    return np.concatenate([top.features(trunk(images.to(device))).float().cpu().numpy() for images, _ in batches])


def nearest_distance(features: np.ndarray, bank: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine distance from each feature row to its nearest bank row (float32, as in the graph)."""
    unit = unit_rows(torch.as_tensor(np.asarray(features), dtype=torch.float32))
    return (1.0 - (unit @ unit_rows(torch.as_tensor(bank, dtype=torch.float32)).T).amax(dim=1)).numpy()


def fit_novelty(bank_features: np.ndarray, validation_features: np.ndarray) -> Novelty:
    """The radius that FLAG_QUANTILE of the validation images stay within, around these training features: halfway
    between the farthest image kept inside and the nearest one flagged, so that no validation image sits on the
    threshold, where rounding alone (another CPU's kernels) would decide its flag."""
    bank = unit_rows(torch.from_numpy(np.asarray(bank_features, dtype=np.float32)))
    distances = nearest_distance(validation_features, bank)
    ranked = np.sort(distances)
    inside = min(len(ranked), int(np.ceil(FLAG_QUANTILE * len(ranked))))
    edge = ranked[inside - 1]
    radius = (edge + ranked[inside]) / 2 if inside < len(ranked) else edge * 1.01
    radius = max(float(radius), MIN_RADIUS)
    return Novelty(bank, radius, int(len(distances)), float(np.mean(distances / radius >= THRESHOLD)))


def bank_pick(records: list[ImageRecord], count: int = BANK_IMAGES, seed: int = 0) -> list[ImageRecord]:
    """Up to count training images, spread evenly over the folder's groups (a class, or a class and source in a
    `bmcell combine` folder: the first two parts of the path), in a seeded order: every lab and class of the
    training data is near some stored image."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.path):
        groups["/".join(record.path.split("/")[:2]) if record.path.count("/") >= 2 else record.label].append(record)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)
    picked: list[ImageRecord] = []
    for rank in range(max(map(len, groups.values()), default=0)):  # round robin: one of each group in turn
        picked += [members[rank] for _, members in sorted(groups.items()) if rank < len(members)]
        if len(picked) >= count:
            break
    return picked[:count]
