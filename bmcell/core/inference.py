"""Classify image files with a checkpoint: the evaluation preprocessing, calibrated softmax, top-k and abstention."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.confidence import calibrated
from bmcell.core.data.images import BadImageError, load_rgb
from bmcell.core.data.transforms import eval_transform
from bmcell.core.novelty import THRESHOLD, split_output

BATCH = 8  # images read and classified at a time: memory stays flat however many are given (32 took ~0.55 GB more)


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the reason it could not be read."""

    image: str
    top: list[tuple[str, float]]
    error: str | None = None
    uncertain: bool = False  # the calibrated top probability is under the checkpoint's abstention threshold
    novelty: float | None = None  # distance to the training images over the usual one (None: model without it)

    @property
    def unknown(self) -> bool:
        """Whether the picture does not look like a cell the model knows (novelty at or above the threshold)."""
        return self.novelty is not None and self.novelty >= THRESHOLD

    def to_dict(self) -> dict:
        """JSON-ready form."""
        if self.error:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "unknown": self.unknown, "novelty": self.novelty, "uncertain": self.uncertain,
                "top": [{"class": c, "probability": p} for c, p in self.top]}


class Classifier:
    """A checkpoint's model with its own preprocessing, ready to classify files."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device) -> None:
        self.classes = checkpoint.classes
        self.confidence = checkpoint.confidence
        self.device = device
        self.model = checkpoint.scored_model().to(device)
        self.transform = eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std)

    def batches(self, paths: list[Path], top_k: int) -> Iterator[list[Prediction]]:
        """Top-k predictions per path, in order, one list per BATCH paths: each batch is read, classified and given
        out before the next is read; an unreadable image gets an error entry, the others are still answered."""
        for start in range(0, len(paths), BATCH):
            yield self._predict_batch(paths[start:start + BATCH], top_k)

    def predict(self, paths: list[Path], top_k: int) -> list[Prediction]:
        """Top-k predictions per path, as one list (batches, joined)."""
        return [result for batch in self.batches(paths, top_k) for result in batch]

    @torch.no_grad()
    def _predict_batch(self, paths: list[Path], top_k: int) -> list[Prediction]:
        """predict for one batch of paths."""
        inputs, results = [], []
        for path in paths:
            try:
                inputs.append(self.transform(load_rgb(path)))
                results.append(None)
            except BadImageError as error:
                results.append(Prediction(str(path), [], str(error)))
        if inputs:
            output = self.model(torch.stack(inputs).to(self.device)).float().cpu().numpy()
            logits, novelty = split_output(output, len(self.classes))
            probabilities, kept = calibrated(self.confidence, logits)
            values, indices = torch.from_numpy(probabilities).topk(min(top_k, len(self.classes)), dim=1)
            answers = iter(zip(values.tolist(), indices.tolist(), kept,
                               novelty.tolist() if novelty is not None else [None] * len(kept)))
            for i, path in enumerate(paths):
                if results[i] is None:
                    vals, idxs, keep, score = next(answers)
                    results[i] = Prediction(str(path), [(self.classes[j], v) for v, j in zip(vals, idxs)],
                                            uncertain=not bool(keep), novelty=score)
        return results
