"""Classification metrics for one fold, and their mean and spread across folds."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.decision import decide_indices

SCALARS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


# The labelling rule is the function's own (shared.decision), so the reports score what ops see.
predict_labels = decide_indices


def fold_metrics(y_true: np.ndarray, probs: np.ndarray, *, positive: int | None = None,
                 threshold: float | None = None) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC AUC, log loss and the confusion matrix.

    Binary heads score the positive class; more than two classes use macro averages
    and one-vs-rest AUC.
    """
    from sklearn import metrics as skm

    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    y_pred = predict_labels(probs, positive, threshold)
    binary = n_classes == 2 and positive is not None
    avg: dict[str, Any] = {"average": "binary", "pos_label": positive} if binary else {"average": "macro"}
    return {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, labels=labels, zero_division=0, **avg)),
        "recall": float(skm.recall_score(y_true, y_pred, labels=labels, zero_division=0, **avg)),
        "f1": float(skm.f1_score(y_true, y_pred, labels=labels, zero_division=0, **avg)),
        "roc_auc": _auc(y_true, probs, positive),
        "log_loss": float(skm.log_loss(y_true, np.clip(probs, 1e-15, 1.0), labels=labels)),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _auc(y_true: np.ndarray, probs: np.ndarray, positive: int | None) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < probs.shape[1]:
        return float("nan")  # AUC is undefined when a fold lacks a class
    if probs.shape[1] == 2:
        pos = 1 if positive is None else positive
        return float(roc_auc_score(y_true == pos, probs[:, pos]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def summarise(folds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of each scalar metric across folds."""
    out: dict[str, dict[str, float]] = {"mean": {}, "std": {}}
    for name in SCALARS:
        values = np.array([f[name] for f in folds], dtype=float)
        out["mean"][name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        out["std"][name] = float(np.nanstd(values)) if np.isfinite(values).any() else float("nan")
    return out


def best_f1_threshold(y_positive: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold with the best F1 on out-of-fold scores, and that F1.

    Cuts are midpoints between consecutive distinct scores, so the threshold never sits
    exactly on a training score; ties go to the cut nearest 0.5.  O(n log n).
    """
    y = np.asarray(y_positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        return 0.5, float("nan")
    order = np.argsort(-scores, kind="stable")
    s, ys = scores[order], y[order]
    tp = np.cumsum(ys)
    predicted = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (predicted + y.sum())
    # A cut after position i is only realisable where the next score differs.
    boundary = np.append(s[:-1] > s[1:], True)
    cuts = np.append((s[:-1] + s[1:]) / 2, s[-1])
    f1, cuts = f1[boundary], cuts[boundary]
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    pick = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return float(cuts[pick]), float(f1[pick])
