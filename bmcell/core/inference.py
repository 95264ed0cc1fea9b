"""Classify image files with a checkpoint: the evaluation preprocessing, calibrated softmax, top-k and abstention."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bmcell.core.checkpoint import Checkpoint
from bmcell.core.confidence import calibrated
from bmcell.core.data.images import BadImageError, load_rgb
from bmcell.core.data.transforms import eval_transform


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the reason it could not be read."""

    image: str
    top: list[tuple[str, float]]
    error: str | None = None
    uncertain: bool = False  # the calibrated top probability is under the checkpoint's abstention threshold

    def to_dict(self) -> dict:
        """JSON-ready form."""
        if self.error:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "uncertain": self.uncertain,
                "top": [{"class": c, "probability": p} for c, p in self.top]}


class Classifier:
    """A checkpoint's model with its own preprocessing, ready to classify files."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device) -> None:
        self.classes = checkpoint.classes
        self.confidence = checkpoint.confidence
        self.device = device
        self.model = checkpoint.build_model().to(device)
        self.transform = eval_transform(checkpoint.image_size, checkpoint.mean, checkpoint.std)

    @torch.no_grad()
    def predict(self, paths: list[Path], top_k: int) -> list[Prediction]:
        """Top-k predictions per path; an unreadable image gets an error entry, the others are still answered."""
        inputs, results = [], []
        for path in paths:
            try:
                inputs.append(self.transform(load_rgb(path)))
                results.append(None)
            except BadImageError as error:
                results.append(Prediction(str(path), [], str(error)))
        if inputs:
            logits = self.model(torch.stack(inputs).to(self.device)).float().cpu().numpy()
            probabilities, kept = calibrated(self.confidence, logits)
            values, indices = torch.from_numpy(probabilities).topk(min(top_k, len(self.classes)), dim=1)
            answers = iter(zip(values.tolist(), indices.tolist(), kept))
            for i, path in enumerate(paths):
                if results[i] is None:
                    vals, idxs, keep = next(answers)
                    results[i] = Prediction(str(path), [(self.classes[j], v) for v, j in zip(vals, idxs)],
                                            uncertain=not bool(keep))
        return results
