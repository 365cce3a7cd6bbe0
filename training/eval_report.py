"""What ``training.evaluate`` writes: JSON, Markdown, ROC / calibration / threshold plots, an HTML page.

The HTML page shows the misclassified and the least confident frames as thumbnails of what
the model saw (the decoded input, squashed to the backbone's size), rendered by Jinja2
with autoescaping on, since keys and labels come from whoever uploaded the frames.
"""

from __future__ import annotations

import base64
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shared.bundle import dump_json
from shared.config import DecodeLimits
from shared.errors import CCTVError
from shared.imaging import decode_image
from shared.storage import ObjectStore
from training.report import plot_threshold

SCALARS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
THUMB = (112, 112)
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation {{ ev.name }}</title>
<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.4em;width:150px;
font-size:11px;vertical-align:top;word-break:break-all}img{width:112px;height:112px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>
<h1>Evaluation {{ ev.name }}</h1>
<p>Model {{ ev.model.version }} ({{ ev.model.where }}) on s3://{{ ev.dataset.bucket }}/{{ ev.dataset.prefix }}:
{{ ev.dataset.n_scored }} frames scored, {{ ev.dataset.unreadable|length }} unreadable.</p>
<table><tr>{% for k in scalars %}<th>{{ k }}</th>{% endfor %}</tr>
<tr>{% for k in scalars %}<td>{{ fmt(ev.metrics[k]) }}</td>{% endfor %}</tr></table>
{% for title, rows in sections %}<h2>{{ title }}</h2>
{% for r in rows %}<figure>{% if thumbs.get(r.key) %}<img alt="" src="data:image/jpeg;base64,{{ thumbs[r.key] }}">
{% endif %}<figcaption>{{ r.key }}<br>true {{ r.label }}, served {{ r.predicted }}<br>
{% for c, p in r.probabilities.items() %}{{ c }} {{ fmt(p) }} {% endfor %}</figcaption></figure>{% endfor %}
{% if not rows %}<p>None.</p>{% endif %}{% endfor %}
{% if ev.dataset.unreadable %}<h2>Unreadable</h2><ul>{% for u in ev.dataset.unreadable %}
<li>{{ u.key }}: {{ u.error }}: {{ u.message }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def markdown(ev: dict[str, Any]) -> str:
    m, ds = ev["metrics"], ev["dataset"]
    model = ev["model"]
    lines = [f"# Evaluation {ev['name']}: model {model['version']}", "",
             f"- frames: s3://{ds['bucket']}/{ds['prefix']} — {ds['n_scored']} scored of {ds['n_listed']} listed; "
             f"{len(ds['unreadable'])} unreadable, {ds['n_unknown_label']} with a label the model lacks "
             f"({', '.join(ds['unknown_labels']) or 'none'}), {ds['skipped_non_image']} non-image keys skipped",
             "- decision: " + (f"`{model['positive_class']}` when its probability >= {model['threshold']:.4f} "
                                "(the bundle's stored threshold)" if model["threshold"] is not None else "argmax"),
             "", "| " + " | ".join(SCALARS) + " |", "|---" * len(SCALARS) + "|",
             "| " + " | ".join(_fmt(m[k]) for k in SCALARS) + " |", "",
             "Confusion matrix (rows: true, columns: served label):", "", _matrix(model["classes"],
                                                                                   m["confusion_matrix"])]
    if model.get("weights") == "random":
        lines += ["", "**Warning: this bundle was trained on random weights (a smoke model); its labels mean "
                  "nothing.**"]
    lines += _sweep_lines(ev) + _camera_lines(ev)
    lines += ["", "Misclassified (most confident first):", ""]
    lines += [_row(r) for r in ev["misclassified"]] or ["- none"]
    lines += ["", "Least confident:", ""] + ([_row(r) for r in ev["least_confident"]] or ["- none"])
    if ds["unreadable"]:
        lines += ["", "Unreadable frames (counted, not scored):", ""]
        lines += [f"- `{u['key']}`: {u['error']}: {u['message']}" for u in ds["unreadable"]]
    return "\n".join(lines) + "\n"


def _row(r: dict[str, Any]) -> str:
    probs = ", ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items())
    return f"- `{r['key']}`: true {r['label']}, served {r['predicted']} ({probs})"


def _matrix(classes: list[str], matrix: list[list[int]]) -> str:
    rows = ["| true \\ served | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    rows += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, matrix, strict=True)]
    return "\n".join(rows)


def _sweep_lines(ev: dict[str, Any]) -> list[str]:
    sweep = ev.get("sweep")
    if not sweep:
        return []
    lines = ["", "Threshold sweep (the served threshold is the bundle's; this shows what others would do):", "",
             "| threshold | accuracy | precision | recall | F1 |", "|---|---|---|---|---|"]
    lines += [f"| {c:.2f} | {a:.3f} | {p:.3f} | {r:.3f} | {f:.3f} |" for c, a, p, r, f in
              zip(sweep["cut"], sweep["accuracy"], sweep["precision"], sweep["recall"], sweep["f1"], strict=True)]
    return lines


def _camera_lines(ev: dict[str, Any]) -> list[str]:
    cameras = ev.get("cameras")
    if not cameras:
        return []
    lines = ["", f"Per camera (`--camera-regex {ev['camera_regex']}`):", "", "| camera | n | accuracy |",
             "|---|---|---|"]
    return lines + [f"| {c} | {v['n']} | {v['accuracy']:.3f} |" for c, v in cameras.items()]


def write(ev: dict[str, Any], store: ObjectStore, destination: str | Path, out: Path | None, *,
          limits: DecodeLimits, input_size: tuple[int, int] = (224, 224)) -> str:
    """Write every file to ``destination`` (an S3 prefix, or a local folder) and ``out``; say where."""
    with tempfile.TemporaryDirectory(prefix="cctv-eval-out-") as tmp:
        folder = Path(tmp)
        render(ev, folder, store, limits=limits, input_size=input_size)
        targets = []
        if isinstance(destination, Path):
            _copy(folder, destination)
            targets.append(str(destination))
        else:
            for path in sorted(folder.iterdir()):
                store.put(destination + path.name, path.read_bytes(), content_type=_content_type(path.name))
            targets.append(f"s3://{store.bucket}/{destination}")
        if out is not None:
            _copy(folder, out)
            targets.append(str(out))
    return " and ".join(targets)


def render(ev: dict[str, Any], folder: Path, store: ObjectStore, *, limits: DecodeLimits,
           input_size: tuple[int, int]) -> None:
    (folder / "evaluation.json").write_bytes(dump_json(json.loads(json.dumps(ev, default=_plain))))
    (folder / "report.md").write_text(markdown(ev))
    if ev.get("sweep"):
        y, s = np.array(ev["y_positive"], dtype=bool), np.array(ev["positive_scores"])
        _plot_roc(y, s, ev["metrics"]["roc_auc"], folder / "roc.png")
        _plot_calibration(y, s, folder / "calibration.png")
        plot_threshold(ev["sweep"], ev["model"]["threshold"], None, folder / "threshold.png",
                       title="F1 and accuracy by threshold")
    keys = {r["key"] for r in ev["misclassified"] + ev["least_confident"]}
    thumbs = {key: thumbnail(store, key, limits, input_size) for key in sorted(keys)}
    (folder / "index.html").write_text(html(ev, {k: v for k, v in thumbs.items() if v}))


def html(ev: dict[str, Any], thumbs: dict[str, str]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    sections = [("Misclassified", ev["misclassified"]), ("Least confident", ev["least_confident"])]
    return env.from_string(PAGE).render(ev=ev, scalars=SCALARS, fmt=_fmt, sections=sections, thumbs=thumbs)


def thumbnail(store: ObjectStore, key: str, limits: DecodeLimits, input_size: tuple[int, int]) -> str | None:
    """A small base64 JPEG of what the model saw, or None if the frame cannot be read again."""
    from PIL import Image

    try:
        frame = decode_image(store.get(key, max_bytes=limits.max_bytes).body, input_size, limits=limits, key=key)
    except CCTVError:
        return None
    buf = io.BytesIO()
    Image.fromarray(frame).resize(THUMB).save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())


def _content_type(name: str) -> str:
    return {".json": "application/json", ".md": "text/markdown; charset=utf-8", ".png": "image/png",
            ".html": "text/html; charset=utf-8"}.get(Path(name).suffix, "application/octet-stream")


def _figure(size: tuple[float, float]) -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    return plt, fig, ax


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _plot_roc(y: np.ndarray, scores: np.ndarray, auc: float, path: Path) -> None:
    if y.all() or not y.any():
        return  # a ROC curve needs both classes
    from sklearn.metrics import roc_curve

    plt, fig, ax = _figure((4.5, 4.5))
    fpr, tpr, _ = roc_curve(y, scores)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    _save(plt, fig, path)


def _plot_calibration(y: np.ndarray, scores: np.ndarray, path: Path, bins: int = 10) -> None:
    """Observed positive rate against the mean predicted probability, in equal-width bins."""
    plt, fig, ax = _figure((4.5, 4.5))
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([scores[which == b].mean() for b in used], [y[which == b].mean() for b in used], marker="o",
            label="this model")
    ax.set_xlabel("predicted probability of the positive class")
    ax.set_ylabel("observed share of positives")
    ax.legend(loc="upper left")
    _save(plt, fig, path)
