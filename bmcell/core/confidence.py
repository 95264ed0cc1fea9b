"""Calibrated confidence and abstention: a temperature fitted on validation logits (lowest negative log-likelihood)
and a threshold on the calibrated top probability below which a prediction reads "uncertain — check by eye"."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from bmcell.core.errors import BmcellError

DEFAULT_COVERAGE = 0.95  # share of validation images kept (answered) by the abstention threshold
ECE_BINS = 15
_LOG_T_GRID = np.linspace(np.log(0.05), np.log(20.0), 241)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of the tempered logits."""
    probabilities = softmax(logits, temperature)
    return float(-np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, None)).mean())


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """|accuracy - confidence| averaged over equal-width confidence bins, weighted by their share of images."""
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (0.05..20) of lowest validation NLL: a log-spaced grid, then a finer grid around its best."""
    grid = _LOG_T_GRID
    for _ in range(2):
        losses = [negative_log_likelihood(logits, targets, float(np.exp(t))) for t in grid]
        best = int(np.argmin(losses))
        low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
        grid = np.linspace(low, high, 41)
    return float(np.exp(grid[int(np.argmin([negative_log_likelihood(logits, targets, float(np.exp(t)))
                                             for t in grid]))]))


def _real(value: object) -> bool:
    """True for an int or a float (not a bool, a string or None)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Confidence:
    """How to turn logits into calibrated probabilities and when to abstain; stored in checkpoints and exports."""

    temperature: float
    threshold: float  # keep a prediction when its calibrated top probability is >= threshold
    coverage_target: float
    fitted_on: str  # which images, e.g. "validation split (1537 images)"
    val_coverage: float
    val_accuracy_kept: float
    val_ece_before: float
    val_ece_after: float

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities."""
        return softmax(logits, self.temperature)

    def kept(self, logits: np.ndarray) -> np.ndarray:
        """True for the predictions confident enough to answer, False for "uncertain"."""
        return self.probabilities(logits).max(1) >= self.threshold

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Confidence":
        """Read back what to_dict wrote, refusing values no fit gives (a temperature that is not a finite number
        above 0, a threshold outside [0, 1]): they would turn every probability into NaN or every answer into
        "uncertain"."""
        try:
            confidence = cls(**values)
        except TypeError as error:
            raise BmcellError(f"confidence settings {values} are not bmcell's ({error})") from None
        temperature, threshold = confidence.temperature, confidence.threshold
        if not (_real(temperature) and math.isfinite(temperature) and temperature > 0):
            raise BmcellError(f"confidence temperature {temperature!r} is not a finite number above 0: the "
                              "checkpoint's confidence block was edited or damaged")
        if not (_real(threshold) and 0 <= threshold <= 1):
            raise BmcellError(f"confidence threshold {threshold!r} is not a number from 0 to 1: the checkpoint's "
                              "confidence block was edited or damaged")
        return confidence


def fit_confidence(logits: np.ndarray, targets: np.ndarray, coverage: float = DEFAULT_COVERAGE,
                   fitted_on: str = "validation split") -> Confidence:
    """Temperature by NLL, then the threshold that keeps `coverage` of these images."""
    if not 0 < coverage <= 1:
        raise BmcellError(f"coverage must be in (0, 1], got {coverage}")
    if len(targets) < 2:
        raise BmcellError(f"need at least 2 labelled images to fit a temperature, got {len(targets)}")
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    temperature = fit_temperature(logits, targets)
    probabilities = softmax(logits, temperature)
    top = probabilities.max(1)
    threshold = float(np.quantile(top, 1 - coverage, method="lower")) if coverage < 1 else 0.0
    below = top[top < threshold]
    if below.size:  # halfway to the next image down: none sits on the threshold, where rounding would decide
        threshold = float((threshold + below.max()) / 2)
    kept = top >= threshold
    correct = probabilities.argmax(1) == targets
    return Confidence(temperature=temperature, threshold=threshold, coverage_target=coverage,
                      fitted_on=f"{fitted_on} ({len(targets)} images)", val_coverage=float(kept.mean()),
                      val_accuracy_kept=float(correct[kept].mean()) if kept.any() else 0.0,
                      val_ece_before=expected_calibration_error(softmax(logits), targets),
                      val_ece_after=expected_calibration_error(probabilities, targets))


def calibrated(confidence: Confidence | None, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and the answered mask of a checkpoint's confidence; plain softmax, all answered, without one."""
    if confidence is None:
        return softmax(logits), np.ones(len(logits), dtype=bool)
    probabilities = confidence.probabilities(logits)
    return probabilities, probabilities.max(1) >= confidence.threshold


def selective_report(confidence: Confidence, logits: np.ndarray, targets: np.ndarray) -> dict:
    """Coverage (share answered) and accuracy among the answered images."""
    kept = confidence.kept(logits)
    correct = np.asarray(logits).argmax(1) == np.asarray(targets)
    return {"coverage": float(kept.mean()) if len(kept) else 0.0,
            "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
            "kept": int(kept.sum())}
