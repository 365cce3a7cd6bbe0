"""The one rule that turns a head's probabilities into a label.

A binary head with a positive class and a threshold labels a frame positive when the
positive class's probability is at or above the threshold; anything else (more than two
classes, or no threshold) takes the most probable class.  Training scores its folds and
its evaluations with this rule, and the function labels frames with it, so what the
reports say is what ops see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def is_thresholded(n_classes: int, positive: int | None, threshold: float | None) -> bool:
    return n_classes == 2 and positive is not None and threshold is not None


def decide_indices(probs: np.ndarray, positive: int | None, threshold: float | None) -> np.ndarray:
    """Predicted class index for each row of ``probs`` (N, n_classes)."""
    probs = np.asarray(probs)
    if is_thresholded(probs.shape[1], positive, threshold):
        assert positive is not None and threshold is not None  # narrowed by is_thresholded
        return np.where(probs[:, positive] >= threshold, positive, 1 - positive)
    return np.asarray(probs.argmax(axis=1))


def decide(probs: np.ndarray, classes: Sequence[str], positive: str | None, threshold: float | None) -> int:
    """Index of the predicted class for one row of probabilities, by class names."""
    pos = classes.index(positive) if positive is not None and positive in classes else None
    return int(decide_indices(np.asarray(probs)[None, :], pos, threshold)[0])
