"""Per-image novelty: how unlike every training image a picture is, computed inside the model graph, so that the
float model, every exported artefact and every app flag the same pictures.

Two distances, each the cosine distance to the nearest of BANK_IMAGES of the model's own training images:
- content: of the pooled feature vector the classifier reads (a kind of cell without a class, a smudge);
- appearance: of the per-channel mean and spread of stage STYLE_STAGE's feature maps, the picture's texture and
  colour at the scale of a few pixels (a photograph, a screenshot, a page of text: things no cell photo looks like).
novelty = the larger of the two, each over its radius. The radii are fitted on the validation images: each
distance over its own FLAG_QUANTILE quantile, then both scaled so that FLAG_QUANTILE of the validation images stay
under THRESHOLD (1.0). At or above it the picture "does not look like a cell this model knows": not a cell, a kind
of cell without a class, or a microscope far from all the training labs. About 1 - FLAG_QUANTILE of validation-like
cells are flagged by construction. Chosen against the content distance alone, the energy score, class-conditional
Mahalanobis distance, other stages and the calibrated top probability, on real non-cell photographs and held-out
labs (docs/crosslab.md, scripts/novelty_eval.py). Checkpoints from before the appearance distance carry the
content distance alone, and keep it."""

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

BANK_IMAGES = 1024  # training images whose features the graph stores (384 + 128 floats each for MobileViT-XS)
FLAG_QUANTILE = 0.95
THRESHOLD = 1.0
STYLE_STAGE = 2  # MobileViT's third stage (1/8 resolution): its statistics tell photographs from cells best
MIN_RADIUS = 0.01  # cosine distance; below it (a barely trained model whose features all look alike) novelty would
# only magnify rounding: a trained MobileViT-XS's radius is about 0.05 (PBC validation images' 95% quantile)
UNKNOWN_TEXT = "does not look like a cell this model knows"  # what every app and `bmcell predict` answer then
BANK_KEY = f"{EXTRA_TENSORS_PREFIX}bank"  # the stored content features' tensor in a checkpoint's safetensors
STYLE_BANK_KEY = f"{EXTRA_TENSORS_PREFIX}style_bank"  # the stored appearance features' tensor
RULE = ("novelty = the larger of two cosine distances to the nearest of the model's stored training images, each "
        "over its radius: of the picture's pooled features (content) and of the per-channel mean and spread of an "
        "early stage's feature maps (appearance); at or above the threshold the picture does not look like a cell "
        "this model knows")


@dataclass(frozen=True)
class NoveltyFeatures:
    """What the novelty distances compare, per image: pooled features and appearance statistics."""

    pooled: np.ndarray
    style: np.ndarray

    @staticmethod
    def concatenate(parts: list[NoveltyFeatures]) -> NoveltyFeatures:
        """The rows of several sets, in order."""
        return NoveltyFeatures(np.concatenate([p.pooled for p in parts]), np.concatenate([p.style for p in parts]))


@dataclass(frozen=True)
class Novelty:
    """The training images' unit feature vectors and the distances that FLAG_QUANTILE of validation images stay
    within."""

    bank: torch.Tensor  # images x features, unit rows, float32
    radius: float
    validation_images: int
    flagged_on_validation: float
    style_bank: torch.Tensor | None = None  # images x 2 * channels of stage STYLE_STAGE, unit rows, float32
    style_radius: float | None = None

    def to_meta(self) -> dict:
        """The checkpoint metadata's "novelty" block (the banks themselves are stored as tensors, tensors())."""
        style = {} if self.style_bank is None else {"style": {
            "stage": STYLE_STAGE, "radius": self.style_radius, "bank_images": int(self.style_bank.shape[0])}}
        return {"radius": self.radius, "bank_images": int(self.bank.shape[0]), "quantile": FLAG_QUANTILE,
                "threshold": THRESHOLD, "validation_images": self.validation_images,
                "flagged_on_validation": self.flagged_on_validation, "rule": RULE} | style

    def tensors(self) -> dict[str, torch.Tensor]:
        """The banks, by the keys a checkpoint stores them under."""
        return {BANK_KEY: self.bank} | ({} if self.style_bank is None else {STYLE_BANK_KEY: self.style_bank})

    @classmethod
    def from_parts(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> Novelty:
        """Rebuild from a checkpoint's metadata block and stored banks."""
        style = meta.get("style")
        if style is not None and style.get("stage") != STYLE_STAGE:
            raise ValueError(f"appearance statistics of stage {style.get('stage')}; this bmcell reads stage "
                             f"{STYLE_STAGE}'s")
        return cls(tensors[BANK_KEY].float(), float(meta["radius"]), int(meta["validation_images"]),
                   float(meta["flagged_on_validation"]),
                   None if style is None else tensors[STYLE_BANK_KEY].float(),
                   None if style is None else float(style["radius"]))


def missing_tensors(meta: dict, tensors: dict[str, torch.Tensor]) -> list[str]:
    """The stored banks a checkpoint's novelty block needs and lacks (or has without the block)."""
    needed = set() if meta is None else {BANK_KEY} | ({STYLE_BANK_KEY} if meta.get("style") else set())
    return sorted(needed ^ set(tensors))


def split_output(output: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A model's output rows → (logits, novelty or None when the output has no novelty column)."""
    output = np.asarray(output)
    return (output[:, :classes], output[:, classes]) if output.shape[1] == classes + 1 else (output, None)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


# The graph's reductions are written in the two forms ExecuTorch's XNNPACK delegate takes (global average pooling,
# max pooling over 4-D views), so that no operator of the novelty distance runs outside it on a phone; every other
# runtime has them too.
def _row_sum(rows: torch.Tensor) -> torch.Tensor:
    """N x C → N x 1 row sums: the mean over the innermost dimensions of an N x 1 x C x 1 view, times C."""
    width = rows.shape[1]
    return rows.reshape(-1, 1, width, 1).mean(dim=(2, 3), keepdim=True).reshape(-1, 1) * float(width)


def _row_max(rows: torch.Tensor) -> torch.Tensor:
    """N x M → N x 1 row maxima: max pooling of an N x 1 x 1 x M view over its whole width (the stride spelled out:
    Core ML's converter needs it)."""
    width = rows.shape[1]
    return nn.functional.max_pool2d(rows.reshape(-1, 1, 1, width), kernel_size=(1, width),
                                    stride=(1, width)).reshape(-1, 1)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, in plain operations every runtime has."""
    return rows * torch.rsqrt(_row_sum(rows * rows) + 1e-12)


def appearance(maps: torch.Tensor) -> torch.Tensor:
    """N x C x H x W feature maps → N x 2C: the unit vector of the per-channel means beside that of the per-channel
    spreads (root mean square deviation)."""
    mean = maps.mean(dim=(2, 3), keepdim=True)
    spread = ((maps - mean) * (maps - mean)).mean(dim=(2, 3), keepdim=True).add(1e-12).sqrt()
    return torch.cat([_unit(mean.flatten(1)), _unit(spread.flatten(1))], dim=1)


def _nearest(rows: torch.Tensor, bank_t: torch.Tensor) -> torch.Tensor:
    """N x 1 cosine distance to the nearest bank row (bank_t: features x images, unit columns)."""
    return 1.0 - _row_max(_unit(rows) @ bank_t)


class NoveltyDistance(nn.Module):
    """Pooled features (and the style stage's maps) → novelty: the larger distance to the nearest stored training
    image over its radius. A module of its own, so quantisers can be told to leave it in float (its differences are
    finer than int8's steps)."""

    def __init__(self, novelty: Novelty) -> None:
        super().__init__()
        self.register_buffer("bank_t", unit_rows(novelty.bank.float()).T.contiguous())
        self.register_buffer("inverse_radius", torch.tensor(1.0 / novelty.radius, dtype=torch.float32))
        self.has_style = novelty.style_bank is not None
        if self.has_style:
            self.register_buffer("style_bank_t", unit_rows(novelty.style_bank.float()).T.contiguous())
            self.register_buffer("inverse_style_radius", torch.tensor(1.0 / novelty.style_radius, dtype=torch.float32))

    def forward(self, pooled: torch.Tensor, style_maps: torch.Tensor | None = None) -> torch.Tensor:
        """N x 1 novelty scores."""
        content = _nearest(pooled, self.bank_t) * self.inverse_radius
        if not self.has_style:
            return content
        return torch.maximum(content, _nearest(appearance(style_maps), self.style_bank_t) * self.inverse_style_radius)


def tapped_forward(trunk: Trunk, top: Top, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features the classifier reads, and the style stage's feature maps, from one pass."""
    maps = trunk.stage_outputs(x)
    return top.features(maps[-1]), maps[STYLE_STAGE]


class NoveltyScored(nn.Module):
    """A MobileViT whose output is its logits followed by one more column, the picture's novelty: N x (C + 1).
    The logits are computed by the same operations as the plain network's, so they are identical."""

    def __init__(self, model: nn.Module, novelty: Novelty) -> None:
        super().__init__()
        self.trunk, self.top, self.novelty = Trunk(model), Top(model), NoveltyDistance(novelty)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, then novelty, per image."""
        pooled, style_maps = tapped_forward(self.trunk, self.top, x)
        return torch.cat([self.top.head.fc(pooled), self.novelty(pooled, style_maps)], dim=1)


@torch.no_grad()
def novelty_features(model: nn.Module, batches: Iterable, device: torch.device) -> NoveltyFeatures:
    """What the novelty distances compare, for every image of (images, targets) batches."""
    trunk, top = Trunk(model).to(device).eval(), Top(model).to(device).eval()
    pooled, style = [], []
    for images, _ in batches:
        features, style_maps = tapped_forward(trunk, top, images.to(device))
        pooled.append(features.float().cpu().numpy())
        style.append(appearance(style_maps).float().cpu().numpy())
    return NoveltyFeatures(np.concatenate(pooled), np.concatenate(style))


def nearest_distance(features: np.ndarray, bank: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine distance from each feature row to its nearest bank row (float32, as in the graph)."""
    unit = unit_rows(torch.as_tensor(np.asarray(features), dtype=torch.float32))
    return (1.0 - (unit @ unit_rows(torch.as_tensor(bank, dtype=torch.float32)).T).amax(dim=1)).numpy()


def _halfway_quantile(scores: np.ndarray) -> float:
    """The score that FLAG_QUANTILE of these stay under: halfway between the largest kept under it and the
    smallest flagged, so that no image sits on the threshold, where rounding alone (another CPU's kernels) would
    decide its flag."""
    ranked = np.sort(scores)
    inside = min(len(ranked), int(np.ceil(FLAG_QUANTILE * len(ranked))))
    edge = ranked[inside - 1]
    return float((edge + ranked[inside]) / 2 if inside < len(ranked) else edge * 1.01)


def fit_novelty(bank: NoveltyFeatures, validation: NoveltyFeatures) -> Novelty:
    """The radii around these training features that FLAG_QUANTILE of the validation images stay within: each
    distance over its own quantile, then both scaled together so that the larger of the two flags 1 -
    FLAG_QUANTILE of the validation images (halfway between two of them, _halfway_quantile)."""
    content_bank = unit_rows(torch.from_numpy(np.asarray(bank.pooled, dtype=np.float32)))
    content = nearest_distance(validation.pooled, content_bank)
    style_bank = unit_rows(torch.from_numpy(np.asarray(bank.style, dtype=np.float32)))
    style = nearest_distance(validation.style, style_bank)
    own = [max(float(np.quantile(d, FLAG_QUANTILE)), MIN_RADIUS) for d in (content, style)]
    scale = _halfway_quantile(np.maximum(content / own[0], style / own[1]))
    radius, style_radius = (max(own[0] * scale, MIN_RADIUS), max(own[1] * scale, MIN_RADIUS))
    flagged = np.maximum(content / radius, style / style_radius) >= THRESHOLD
    return Novelty(content_bank, radius, len(content), float(np.mean(flagged)), style_bank, style_radius)


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
