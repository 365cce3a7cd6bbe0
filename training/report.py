"""The training report: JSON for machines, Markdown for people, two PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from shared.bundle import dump_json

COLUMNS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, led by the per-fold table with mean ± std."""
    ds, cv = report["dataset"], report["cv"]
    lines = [f"# Training report: {report['version']}", "",
             f"- backbone: {report['backbone']} ({report['weights']['source']} weights"
             + (", SMOKE RUN ONLY" if report["weights"]["source"] == "random" else "") + ")",
             f"- dataset: s3://{ds['bucket']}/{ds['prefix']} — {ds['n_images']} images "
             f"({', '.join(f'{k}: {v}' for k, v in ds['counts'].items())}); fingerprint {ds['fingerprint'][:16]}",
             f"- skipped: {ds['skipped_non_image']} non-image keys, {len(ds['unreadable'])} unreadable images",
             f"- features: {report['features']['computed']} computed, {report['features']['cache_hits']} from cache"
             f" ({report['features']['images_per_second']:.1f} img/s)",
             f"- folds: {cv['folds_k']} ({'StratifiedGroupKFold' if cv['grouped'] else 'StratifiedKFold'}), "
             f"seed {report['seed']}", "",
             "| fold | n | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for fold in cv["folds"]:
        lines.append(f"| {fold['fold']} | {fold['n']} | " + " | ".join(_fmt(fold[c]) for c in COLUMNS) + " |")
    lines.append("| **mean ± std** | | " + " | ".join(
        f"{_fmt(cv['mean'][c])} ± {_fmt(cv['std'][c])}" for c in COLUMNS) + " |")
    lines += ["", _threshold_line(report), "", "Out-of-fold confusion matrix (rows: true, columns: predicted):", "",
              _matrix(report["classes"], cv["oof"]["confusion_matrix"])]
    if report.get("promotion"):
        from training.gate import markdown as gate_markdown

        lines += ["", gate_markdown(report["promotion"])]
    if ds["unreadable"]:
        lines += ["", "Unreadable images (skipped):", ""]
        lines += [f"- `{u['key']}`: {u['error']}: {u['message']}" for u in ds["unreadable"]]
    return "\n".join(lines) + "\n"


def _threshold_line(report: dict[str, Any]) -> str:
    oof = report["cv"]["oof"]
    if report.get("threshold") is None:
        return f"Decision: argmax over {len(report['classes'])} classes; out-of-fold accuracy {_fmt(oof['accuracy'])}."
    choice = report.get("threshold_choice") or {}
    spread = (f" ± {_fmt(choice['uncertainty'])} (90% of {choice['bootstraps']} bootstrap cuts in "
              f"[{_fmt(choice['interval'][0])}, {_fmt(choice['interval'][1])}]; single best out-of-fold cut "
              f"{_fmt(choice['best_f1_cut'])})" if choice else "")
    lines = [f"Decision threshold for `{report['positive_class']}`: {report['threshold']:.4f}{spread}; "
             f"at that threshold out-of-fold F1 {_fmt(oof['f1'])}, accuracy {_fmt(oof['accuracy'])}."]
    curve = report["cv"].get("threshold_curves")
    if curve:
        lines += ["", "F1 and accuracy of the out-of-fold scores around it (`threshold.png`):", "",
                  "| cut | F1 | accuracy |", "|---|---|---|"]
        near = [i for i, c in enumerate(curve["cut"]) if abs(c - report["threshold"]) <= 0.2 + 1e-9]
        lines += [f"| {curve['cut'][i]:.2f} | {curve['f1'][i]:.3f} | {curve['accuracy'][i]:.3f} |" for i in near]
    return "\n".join(lines)


def _matrix(classes: list[str], matrix: list[list[int]]) -> str:
    rows = ["| true \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    rows += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, matrix, strict=True)]
    return "\n".join(rows)


def write(report: dict[str, Any], out_dir: Path, y: np.ndarray, oof_probs: np.ndarray) -> None:
    plain = json.loads(json.dumps(report, default=_json_default))
    (out_dir / "report.json").write_bytes(dump_json(plain))  # strict JSON: NaN becomes null
    (out_dir / "report.md").write_text(markdown(report))
    _plot_confusion(report["classes"], report["cv"]["oof"]["confusion_matrix"], out_dir / "confusion_matrix.png")
    if report.get("positive_class") is not None:
        pos = report["classes"].index(report["positive_class"])
        _plot_roc(y == pos, oof_probs[:, pos], report["cv"]["oof"]["roc_auc"], out_dir / "roc.png")
        if report["cv"].get("threshold_curves"):
            plot_threshold(report["cv"]["threshold_curves"], report["threshold"], report.get("threshold_choice"),
                           out_dir / "threshold.png", title="Out-of-fold F1 and accuracy by threshold")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _plot_confusion(classes: list[str], matrix: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    data = np.asarray(matrix)
    ax.imshow(data, cmap="Blues")
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > data.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Out-of-fold confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _plot_roc(y: np.ndarray, scores: np.ndarray, auc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"out-of-fold AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def plot_threshold(curve: dict[str, list[float]], threshold: float | None, choice: dict[str, Any] | None,
                   path: Path, *, title: str) -> None:
    """F1 and accuracy against the cut, with the chosen threshold and its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(curve["cut"], curve["f1"], label="F1")
    ax.plot(curve["cut"], curve["accuracy"], label="accuracy")
    if choice:
        ax.axvspan(choice["interval"][0], choice["interval"][1], color="grey", alpha=0.2, label="90% of bootstrap cuts")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("threshold on the positive-class probability")
    ax.set_ylim(min(0.5, min(curve["f1"] + curve["accuracy"])), 1.005)
    ax.set_title(title)
    ax.legend(loc="lower center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
