"""How far a lab's unlabelled photos are from a model's training data, and how accurate the model will probably be
on them (`bmcell check`).

Distance: each photo's pooled feature vector is compared (cosine) with those of the model's own training images;
a photo farther from all of them than 95% of the model's held-out validation images are counts as "outside the
training data". On images like the training data about 5% are outside; the share outside is the shift score.

Accuracy: average thresholded confidence (ATC, Garg et al., ICLR 2022) picks the calibrated confidence above which
as many held-out validation images lie as the model gets right; on a lab's photos the share above it estimates the
accuracy. On photos unlike the training data confidence stays high while accuracy falls, so ATC alone
overestimates; the estimate here counts a photo as likely right only when it is both above the ATC threshold and
inside the training data (measured against the truth on labs left out: docs/crosslab.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmcell.core.confidence import Confidence, calibrated
from bmcell.core.novelty import nearest_distance

OUTSIDE_QUANTILE = 0.95  # a validation image is outside the training data this often
LIKE_SHARE = 0.10  # at most this share outside reads "like the training data"
FAR_SHARE = 0.50  # more than this share outside reads "far from the training data"
SIGNIFICANCE = 0.01  # a share outside above 5% by chance this rarely still reads "like the training data"
MIN_CHECK_IMAGES = 20
VERDICTS = ("like the training data", "shifted", "far from the training data")


def atc_threshold(top_probability: np.ndarray, correct: np.ndarray) -> float:
    """The confidence at or above which the share of these images equals their accuracy (ATC's threshold): the
    k-th highest confidence, k the number right; above every image when none is right."""
    ranked = np.sort(np.asarray(top_probability, dtype=np.float64))[::-1]
    right = int(np.sum(correct))
    return float(ranked[right - 1]) if right else float(np.nextafter(ranked[0], np.inf))


def fit_atc(confidence: Confidence | None, logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """ATC's threshold on these labelled images' calibrated confidence, and their accuracy: what `bmcell check` and
    the web app's batch check both estimate with."""
    probabilities, _ = calibrated(confidence, logits)
    correct = probabilities.argmax(1) == np.asarray(targets)
    return atc_threshold(probabilities.max(1), correct), float(correct.mean())


def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p)."""
    if successes <= 0:
        return 1.0
    terms = [math.exp(math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                      + k * math.log(p) + (trials - k) * math.log1p(-p)) for k in range(successes, trials + 1)]
    return min(1.0, float(sum(terms)))


@dataclass(frozen=True)
class Reference:
    """What a lab's photos are compared with: the training images' features, the distance 95% of held-out
    validation images stay within, and the ATC threshold and accuracy on those validation images."""

    bank: np.ndarray
    radius: float
    atc_threshold: float
    validation_accuracy: float
    validation_images: int


def fit_reference(bank: np.ndarray, validation_features: np.ndarray, validation_logits: np.ndarray,
                  validation_targets: np.ndarray, confidence: Confidence | None) -> Reference:
    """The reference of a model from its training images' features and its validation images' features, logits
    and labels."""
    radius = float(np.quantile(nearest_distance(validation_features, bank), OUTSIDE_QUANTILE))
    threshold, accuracy = fit_atc(confidence, validation_logits, validation_targets)
    return Reference(bank, radius, threshold, accuracy, len(validation_targets))


def verdict(outside: int, images: int) -> str:
    """Like the training data, shifted, or far from it, from how many photos lie outside it."""
    share = outside / images
    expected = 1 - OUTSIDE_QUANTILE
    if share <= LIKE_SHARE or binomial_tail(outside, images, expected) >= SIGNIFICANCE:
        return VERDICTS[0]
    return VERDICTS[2] if share > FAR_SHARE else VERDICTS[1]


def check_photos(reference: Reference, features: np.ndarray, logits: np.ndarray,
                 confidence: Confidence | None) -> dict:
    """The shift score and verdict, the accuracy estimate (and ATC's alone, an upper figure), the share answered,
    and per photo whether it lies outside the training data and whether it is likely right."""
    distance = nearest_distance(features, reference.bank)
    outside = distance > reference.radius
    probabilities, answered = calibrated(confidence, logits)
    confident = probabilities.max(1) >= reference.atc_threshold
    likely_right = confident & ~outside
    images = len(logits)
    return {"images": images, "outside_share": float(outside.mean()), "expected_outside_share": 1 - OUTSIDE_QUANTILE,
            "verdict": verdict(int(outside.sum()), images),
            "estimated_accuracy": float(likely_right.mean()), "atc_accuracy": float(confident.mean()),
            "answered_share": float(answered.mean()),
            "reference": {"training_images": len(reference.bank), "validation_images": reference.validation_images,
                          "validation_accuracy": reference.validation_accuracy,
                          "atc_threshold": reference.atc_threshold, "radius": reference.radius},
            "per_image": {"outside": outside.tolist(), "likely_right": likely_right.tolist(),
                          "predicted": probabilities.argmax(1).tolist(),
                          "probability": probabilities.max(1).round(6).tolist()}}


def advice(report: dict, run: str) -> list[str]:
    """What to do next, in plain lines, from a check's verdict and estimate."""
    lines = []
    if report["verdict"] == VERDICTS[0] and report["estimated_accuracy"] >= 0.9:
        lines.append("these photos look like the model's training data: use it, and still check a sample of its "
                     "answers by eye")
    else:
        lines.append(f"label about 20 cells per class (at least 5) of this lab into one folder per class and run "
                     f"`bmcell finetune {run} --data LABELLED_DIR --out NEW_RUN`: it adapts the model in minutes and "
                     "measures its accuracy on your cells")
        lines.append(f"without labels, `bmcell adapt {run} --images DIR --out NEW_RUN` recalibrates it to this "
                     "microscope (then check it again)")
    if report["verdict"] == VERDICTS[2]:
        lines.append("most photos are far from anything the model was trained on: make sure they are crops of single "
                     "white cells, centred, at a zoom like the training images, not whole fields or other objects")
    return lines
