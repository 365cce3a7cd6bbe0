"""Choosing a binary decision threshold that is stable, not lucky.

The single best cut on out-of-fold scores is the midpoint between two training scores.
On a small set whose scores separate perfectly, any cut in the gap is "best", and the one
picked depends on the two images at its edges; it does not carry over to other cameras.

The rule here: draw ``bootstraps`` resamples (with replacement) of the out-of-fold
(label, score) pairs, take the best-F1 cut of each, and use their median.  The median of
the resampled cuts is the centre of the region where the classes change over, weighted by
how often each cut wins; one image at the edge of the gap barely moves it.  The spread of
the cuts (half their central 90% interval) is the threshold's uncertainty; both go into
the manifest, and the report shows F1 and accuracy on the out-of-fold scores around it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shared.manifest import ThresholdDoc
from training.metrics import best_f1_threshold

RULE = "median of the best-F1 cuts of bootstrap resamples of the out-of-fold scores"
BOOTSTRAPS = 500


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    value: float
    uncertainty: float
    interval: tuple[float, float]
    bootstraps: int
    best_f1_cut: float

    def to_doc(self) -> ThresholdDoc:
        return {"value": self.value, "rule": RULE, "uncertainty": self.uncertainty,
                "interval": list(self.interval), "bootstraps": self.bootstraps, "best_f1_cut": self.best_f1_cut}


def choose_threshold(y_positive: np.ndarray, scores: np.ndarray, *, bootstraps: int = BOOTSTRAPS,
                     seed: int = 0) -> ThresholdChoice:
    """The bootstrap-median best-F1 cut of ``scores`` (positive-class probabilities), with its spread."""
    y = np.asarray(y_positive, dtype=bool)
    s = np.asarray(scores, dtype=float)
    best, _ = best_f1_threshold(y, s)
    if y.all() or not y.any():
        return ThresholdChoice(0.5, float("nan"), (0.5, 0.5), 0, best)
    rng = np.random.default_rng(seed)
    cuts = []
    for _ in range(bootstraps):
        pick = rng.integers(0, len(y), len(y))
        if y[pick].any() and not y[pick].all():
            cuts.append(best_f1_threshold(y[pick], s[pick])[0])
    lo, mid, hi = (float(v) for v in np.percentile(cuts, [5, 50, 95]))
    return ThresholdChoice(round(mid, 6), round((hi - lo) / 2, 6), (round(lo, 6), round(hi, 6)), len(cuts),
                           round(best, 6))


def curves(y_positive: np.ndarray, scores: np.ndarray, cuts: np.ndarray | None = None) -> dict[str, list[float]]:
    """F1 and accuracy of the rule ``score >= cut`` over a grid of cuts."""
    y = np.asarray(y_positive, dtype=bool)
    s = np.asarray(scores, dtype=float)
    cuts = np.round(np.linspace(0.02, 0.98, 49), 4) if cuts is None else np.asarray(cuts, dtype=float)
    predicted = s[None, :] >= cuts[:, None]
    tp = (predicted & y).sum(axis=1)
    f1 = 2 * tp / np.maximum(predicted.sum(axis=1) + y.sum(), 1)
    accuracy = (predicted == y).mean(axis=1)
    return {"cut": cuts.tolist(), "f1": f1.round(4).tolist(), "accuracy": accuracy.round(4).tolist()}
