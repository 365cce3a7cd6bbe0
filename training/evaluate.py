"""``python -m training.evaluate``: score a bundle on labelled frames through the serving path.

Every frame goes through the function's own ``functions.service.ClassifyService`` with the
function's settings from the environment (decode limits and budget): the size-checked GET,
``shared.imaging.decode_image``, batched inference with the ONNX backbone and head in
``shared.runtime.Classifier``, and the bundle's stored threshold through ``shared.decision``.
The labels scored are read from the result documents it writes (under a scratch prefix,
``cache/evaluation-results/<version>/<name>/``), so they are the function's labels by
construction, and no TensorFlow is needed.  The evaluation goes to
``<model-prefix><version>/evaluation/<name>/`` in the bucket (``--bundle DIR``: ``DIR/evaluation/<name>/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from functions.events import ObjectRef
from functions.service import ClassifyService
from shared import bundle
from shared.cli import PrefixFlag, add_s3_arguments, resolve_s3_arguments
from shared.clock import Clock, utc_now
from shared.config import DecodeLimits, FunctionSettings, S3Settings, normalise_prefix
from shared.decision import is_thresholded
from shared.errors import CCTVError, ConfigError, DatasetError
from shared.runtime import Classifier
from shared.storage import ObjectStore, make_client
from shared.validation import require_positive
from training import eval_report
from training.dataset import Dataset, Item, list_dataset
from training.features import Unreadable
from training.metrics import fold_metrics
from training.threshold import curves

CHUNK = 256  # frames handed to the service at a time (it batches inference itself)
TOP_N = 12
# Where the function's result documents for an evaluation go: <this><version>/<name>/<key>.json.
RESULTS_SCRATCH = "cache/evaluation-results/"
# Given on the command line every time: no environment fallback.
PREFIX = PrefixFlag("--prefix", "prefix above the label folders, e.g. check/ (<prefix><label>/...)", required=True)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    bucket: str
    prefix: str
    s3: S3Settings
    model: str  # "latest" or a version
    bundle_dir: Path | None
    model_prefix: str
    name: str
    camera_regex: str | None
    function: FunctionSettings  # the function's own settings (limits, decode budget), from the environment
    out: Path | None
    top_n: int = TOP_N

    @property
    def limits(self) -> DecodeLimits:
        return self.function.limits


@dataclasses.dataclass(frozen=True)
class Scored:
    key: str
    label: str
    predicted: str
    probabilities: dict[str, float]
    confidence: float  # distance from the decision: |p(positive) - threshold|, or the top probability
    camera: str


@dataclasses.dataclass
class LoadedModel:
    classifier: Classifier
    version: str
    where: str  # s3://... or a local folder
    destination: Callable[[str], str | Path]  # evaluation name -> S3 prefix (str) or local folder (Path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_s3_arguments(p, bucket_help="bucket holding the labelled frames and the models (env BUCKET)", prefix=PREFIX)
    p.add_argument("--model", default="latest", help="latest (models/latest.json) or a bundle version (default latest)")
    p.add_argument("--bundle", type=Path, help="a local bundle folder instead of one in the bucket")
    p.add_argument("--model-prefix", default="models/", help="where bundles live in the bucket (default models/)")
    p.add_argument("--name", help="name of this evaluation (default: the prefix and the UTC time)")
    p.add_argument("--camera-regex", metavar="REGEX", help="regex over the key below PREFIX whose match (or first "
                   "group) names the camera; accuracy is reported per camera")
    p.add_argument("--workers", type=int, default=8, help="concurrent downloads and decodes (default 8)")
    p.add_argument("--top", type=int, default=TOP_N,
                   help=f"misclassified and least-confident keys listed (default {TOP_N})")
    p.add_argument("--out", type=Path, help="also write the evaluation to this local folder")
    return p


def config_from_args(argv: Sequence[str] | None, env: Mapping[str, str], clock: Clock) -> EvalConfig:
    args = build_parser().parse_args(argv)
    where = resolve_s3_arguments(args, env, prefix=PREFIX)
    require_positive(args.workers, "--workers")
    if args.top < 0:
        raise ConfigError("--top must be 0 or more.")
    prefix = where.prefix
    name = args.name or f"{prefix.strip('/').replace('/', '-') or 'root'}-{clock():%Y%m%dT%H%M%SZ}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise ConfigError(f"--name {name!r} may hold only letters, digits, '.', '_' and '-'.")
    return EvalConfig(bucket=where.bucket, prefix=prefix, s3=where.s3,
                      model=args.model, bundle_dir=args.bundle, model_prefix=normalise_prefix(args.model_prefix),
                      name=name, camera_regex=args.camera_regex,
                      function=dataclasses.replace(FunctionSettings.from_env(env), max_workers=args.workers),
                      out=args.out, top_n=args.top)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, clock: Clock = utc_now) -> int:
    env = os.environ if env is None else env
    try:
        config = config_from_args(argv, env, clock)
        store = ObjectStore(make_client(config.s3, max_pool_connections=config.function.max_workers * 2), config.bucket)
        with tempfile.TemporaryDirectory(prefix="cctv-eval-") as tmp:
            model = load_model(store, config, Path(tmp))
            result = run(config, store, model)
    except CCTVError as exc:
        print(f"training.evaluate: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("training.evaluate: interrupted.", file=sys.stderr)
        return 130
    print(result["markdown"])
    print(f"Evaluation written to {result['written_to']}.")
    return 0


def load_model(store: ObjectStore, config: EvalConfig, cache_dir: Path) -> LoadedModel:
    """The bundle to evaluate, verified exactly as the function verifies it."""
    if config.bundle_dir is not None:
        clf = Classifier.from_dir(config.bundle_dir)
        return LoadedModel(clf, clf.manifest.version, str(config.bundle_dir),
                           lambda name: config.bundle_dir / "evaluation" / name)  # type: ignore[operator]
    pinned = None if config.model == "latest" else config.model
    version, sha = bundle.resolve_version(store, config.model_prefix, pinned)
    return load_version(store, config.model_prefix, version, sha, cache_dir)


def load_version(store: ObjectStore, model_prefix: str, version: str, sha: str | None, cache_dir: Path) -> LoadedModel:
    folder, manifest = bundle.fetch_bundle(store, model_prefix, version, cache_dir, sha)
    prefix = f"{model_prefix}{version}/"
    return LoadedModel(Classifier(folder, manifest), version, f"s3://{store.bucket}/{prefix}",
                       lambda name: f"{prefix}evaluation/{name}/")


def run(config: EvalConfig, store: ObjectStore, model: LoadedModel) -> dict[str, Any]:
    dataset = list_dataset(store, config.prefix, group_by=config.camera_regex)
    settings = service_settings(config.function, dataset.prefix, model.version, config.name)
    evaluation = evaluate(dataset, store, model, settings=settings, top_n=config.top_n,
                          camera_regex=config.camera_regex)
    evaluation["name"] = config.name
    written = eval_report.write(evaluation, store, model.destination(config.name), config.out, limits=config.limits,
                                input_size=model.classifier.input_size)
    return {"evaluation": evaluation, "markdown": eval_report.markdown(evaluation), "written_to": written}


def service_settings(base: FunctionSettings, prefix: str, version: str, name: str) -> FunctionSettings:
    """The function's settings (limits, decode budget, workers), reading ``prefix`` and writing to a scratch prefix."""
    try:
        return dataclasses.replace(base, input_prefix=prefix, results_prefix=f"{RESULTS_SCRATCH}{version}/{name}/",
                                   role="all")
    except ConfigError as exc:
        raise ConfigError(f"--prefix {prefix!r} cannot be evaluated: {exc.message}") from None


def evaluate(dataset: Dataset, store: ObjectStore, model: LoadedModel, *, settings: FunctionSettings,
             top_n: int = TOP_N, camera_regex: str | None = None) -> dict[str, Any]:
    """Score every labelled frame; the figures, the sweep and the keys worth a look."""
    clf = model.classifier
    manifest = clf.manifest
    unknown = sorted({i.label for i in dataset.items} - set(manifest.classes))
    items = [i for i in dataset.items if i.label in manifest.classes]
    scored, unreadable = score(items, store, clf, settings=settings)
    base = {"model": {"version": model.version, "where": model.where, "classes": manifest.classes,
                      "positive_class": manifest.positive_class, "threshold": manifest.threshold,
                      "weights": manifest.weights_source},
            "dataset": {"bucket": dataset.bucket, "prefix": dataset.prefix, "n_listed": len(dataset.items),
                        "n_scored": len(scored), "skipped_non_image": dataset.skipped_non_image,
                        "unknown_labels": unknown,
                        "n_unknown_label": sum(1 for i in dataset.items if i.label in unknown),
                        "unreadable": [dataclasses.asdict(u) for u in unreadable]},
            "camera_regex": camera_regex}
    if not scored:
        raise DatasetError(f"No frame under s3://{dataset.bucket}/{dataset.prefix} could be scored "
                           f"({len(unreadable)} unreadable, labels {', '.join(unknown) or 'none'} unknown to the "
                           f"model, which knows {', '.join(manifest.classes)}).", bucket=dataset.bucket,
                           prefix=dataset.prefix)
    found = figures(scored, manifest.classes, manifest.positive_class, manifest.threshold, top_n)
    found["cameras"] = _per_camera(scored) if camera_regex else None
    return base | found


def score(items: Sequence[Item], store: ObjectStore, clf: Classifier, *,
          settings: FunctionSettings) -> tuple[list[Scored], list[Unreadable]]:
    """Classify through the function's own service; its result documents give the labels.

    ``ClassifyService`` downloads, decodes, batches and labels each frame exactly as the
    function does and writes the function's result document (to the scratch results
    prefix of ``settings``); bad input ends in an error result, counted here, never raised.
    """
    service = ClassifyService(settings, lambda bucket: store, clf)
    scored: list[Scored] = []
    unreadable: list[Unreadable] = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        refs = [ObjectRef(store.bucket, item.key, item.etag, item.size) for item in chunk]
        for item, outcome in zip(chunk, service.run(refs), strict=True):
            result = outcome.result or {}
            if result.get("status") == "ok":
                scored.append(_scored(item, result, clf))
            elif result.get("error"):
                unreadable.append(Unreadable(item.key, result["error"]["type"], result["error"]["message"]))
            else:  # a transient fault the function would retry
                why = outcome.error or outcome.status.value
                unreadable.append(Unreadable(item.key, type(why).__name__ if outcome.error else "failed", str(why)))
    return scored, unreadable


def _scored(item: Item, result: dict[str, Any], clf: Classifier) -> Scored:
    m = clf.manifest
    probabilities = {c: float(p) for c, p in result["probabilities"].items()}
    positive = m.classes.index(m.positive_class) if m.positive_class in m.classes else None
    if is_thresholded(len(m.classes), positive, m.threshold):
        assert m.positive_class is not None and m.threshold is not None  # narrowed by is_thresholded
        confidence = abs(probabilities[m.positive_class] - m.threshold)
    else:
        confidence = max(probabilities.values())
    return Scored(item.key, item.label, str(result["label"]), probabilities, round(confidence, 6), item.group)


def figures(scored: list[Scored], classes: list[str], positive: str | None, threshold: float | None,
            top_n: int) -> dict[str, Any]:
    y = np.array([classes.index(s.label) for s in scored])
    probs = np.array([[s.probabilities[c] for c in classes] for s in scored], dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)  # the served probabilities are rounded to 6 places
    pos = None if positive is None else classes.index(positive)
    metrics = fold_metrics(y, probs, positive=pos, threshold=threshold)
    predicted = np.array([classes.index(s.predicted) for s in scored])
    out: dict[str, Any] = {"metrics": metrics, "frames": [dataclasses.asdict(s) for s in scored]}
    # The function's labels, recounted: they must agree with the metrics' own use of the rule.
    out["metrics"]["accuracy_of_served_labels"] = float(np.mean(predicted == y))
    wrong = [s for s in scored if s.predicted != s.label]
    out["misclassified"] = [dataclasses.asdict(s) for s in sorted(wrong, key=lambda s: -s.confidence)[:top_n]]
    out["least_confident"] = [dataclasses.asdict(s) for s in sorted(scored, key=lambda s: s.confidence)[:top_n]]
    if is_thresholded(len(classes), pos, threshold):
        assert pos is not None  # narrowed by is_thresholded
        out["sweep"] = sweep(y == pos, probs[:, pos])
        out["positive_scores"] = probs[:, pos].round(6).tolist()
        out["y_positive"] = (y == pos).astype(int).tolist()
    return out


def sweep(y_positive: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """Accuracy, F1, precision and recall at a grid of thresholds."""
    grid = np.round(np.linspace(0.05, 0.95, 19), 4)
    out = curves(y_positive, scores, grid)
    predicted = scores[None, :] >= grid[:, None]
    tp = (predicted & y_positive).sum(axis=1)
    out["precision"] = np.round(tp / np.maximum(predicted.sum(axis=1), 1), 4).tolist()
    out["recall"] = np.round(tp / max(int(y_positive.sum()), 1), 4).tolist()
    return out


def _per_camera(scored: list[Scored]) -> dict[str, dict[str, float]]:
    cameras: dict[str, list[bool]] = {}
    for s in scored:
        cameras.setdefault(s.camera, []).append(s.predicted == s.label)
    return {c: {"n": len(v), "accuracy": round(float(np.mean(v)), 4)} for c, v in sorted(cameras.items())}


if __name__ == "__main__":
    sys.exit(main())
