"""``python -m training.fit``: labelled frames in S3 -> a versioned model bundle.

Cheap checks (flags, weights on disk, bucket, dataset layout) run before TensorFlow is
imported, so user errors come back in a second as one line and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from shared import bundle
from shared.backbones import BackboneSpec, get_backbone
from shared.clock import Clock, utc_now
from shared.errors import CCTVError, ConfigError, DatasetError, PromotionRefusedError
from shared.imaging import DECODER_VERSION, RESIZE_FILTER
from shared.manifest import BackboneDoc, ManifestDoc
from shared.storage import ObjectStore, make_client
from training import export, gate as training_gate, head_input as head_inputs, report as report_mod
from training.cache import FeatureCache, namespace
from training.cli import FitConfig, config_from_args
from training.dataset import Dataset, Item, check_folds, list_dataset
from training.features import ExtractionStats, Unreadable, extract, load_frame
from training.head import CVResult, check_not_chance, cross_validate, fit_final
from training.keras_backbone import (
    WeightsChoice,
    build_model,
    feature_function,
    keras_home,
    resolve_weights,
)
from training.onnx_cache import FILES as ONNX_FILES, OnnxCache, cache_key, onnx_features

VERSIONED_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxmltools",
                      "lightgbm", "scikit-learn", "numpy", "pillow")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        config = config_from_args(argv, env)
        result = run(config, ObjectStore(make_client(config.s3, max_pool_connections=config.workers * 2),
                                         config.bucket), env=env)
    except CCTVError as exc:
        print(f"training.fit: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("training.fit: interrupted; nothing was promoted.", file=sys.stderr)
        return 130
    print(result["markdown"])
    print(result["summary"])
    return 0


def run(config: FitConfig, store: ObjectStore, *, env: Mapping[str, str], clock: Clock = utc_now) -> dict[str, Any]:
    """The whole training job; returns the report and where the bundle went."""
    spec = get_backbone(config.backbone)
    choice = resolve_weights(spec, config.weights, home=keras_home(env), seed=config.seed)
    kind = _head_input(config.head_input, choice)
    check_out_dir(config.out)
    store.check_bucket()
    dataset = list_dataset(store, config.prefix, labels=config.labels, group_by=config.group_by)
    check_folds(dataset, config.folds, grouped=bool(config.group_by))
    positive = _positive_class(dataset, config.positive)
    with tempfile.TemporaryDirectory(prefix="cctv-backbone-") as work:
        backbone = _backbone(config, store, spec, choice, kind, Path(work))
        return _train(config, store, env, clock, spec, choice, kind, dataset, positive, backbone)


@dataclasses.dataclass
class Backbone:
    """The Keras model, or (a cache hit) the exported ONNX backbone with its parity measured when it was made."""

    model: Any | None
    cached_dir: Path | None = None
    meta: dict[str, Any] | None = None
    cache: OnnxCache | None = None

    def features(self, spec: BackboneSpec) -> Callable[[np.ndarray], np.ndarray]:
        if self.model is not None:
            return feature_function(self.model, spec)
        assert self.cached_dir is not None
        return onnx_features(self.cached_dir / "backbone.onnx")


def _backbone(config: FitConfig, store: ObjectStore, spec: BackboneSpec, choice: WeightsChoice, kind: str,
              work: Path) -> Backbone:
    cache = None
    if config.onnx_cache_prefix is not None:
        cache = OnnxCache(store, config.onnx_cache_prefix, cache_key(spec, choice.identity, kind))
        meta = cache.fetch(work)
        if meta is not None:
            return Backbone(None, work, meta, cache)
    return Backbone(build_model(spec, choice, seed=config.seed, head_input=kind), cache=cache)


def _train(config: FitConfig, store: ObjectStore, env: Mapping[str, str], clock: Clock, spec: BackboneSpec,
           choice: WeightsChoice, kind: str, dataset: Dataset, positive: str | None,
           backbone: Backbone) -> dict[str, Any]:
    feats, unreadable, stats, hits = _featurise(config, store, dataset, spec, choice, backbone, kind)
    items = _usable(dataset, unreadable, config.max_unreadable)
    X = np.stack([feats[i.key] for i in items]).astype(np.float32)
    y = np.array([dataset.classes.index(i.label) for i in items])
    pos_index = None if positive is None else dataset.classes.index(positive)
    groups = np.array([i.group for i in items]) if config.group_by else None
    check_folds(_subset(dataset, items), config.folds, grouped=bool(config.group_by))
    cv = cross_validate(X, y, n_classes=len(dataset.classes), positive=pos_index, folds=config.folds,
                        seed=config.seed, groups=groups, overrides=config.head_overrides)
    version = f"{clock():%Y%m%dT%H%M%SZ}-{dataset.fingerprint[:8]}"
    rep = _report(config, dataset, spec, choice, cv, stats, hits, unreadable, version, positive)
    rep["head_input"] = head_inputs.describe(kind, spec.feature_dim)
    rep["onnx_cache"] = None if backbone.cache is None else backbone.cache.key
    rep["backbone_from_cache"] = backbone.model is None
    markdown = report_mod.markdown(rep)
    try:
        check_not_chance(cv, y, min_auc=config.min_auc)
    except CCTVError:
        print(markdown, file=sys.stderr)
        raise
    final = fit_final(X, y, cv.params)
    class_index = keras_home(env) / "models" / "imagenet_class_index.json"
    saved = _save(config, store, spec, choice, backbone, final, (X, y, items), cv, rep, class_index, clock)
    return saved | {"markdown": markdown}


def _positive_class(dataset: Dataset, wanted: str | None) -> str | None:
    if wanted is not None and wanted not in dataset.classes:
        raise DatasetError(f"--positive {wanted!r} is not one of the labels found: {', '.join(dataset.classes)}.")
    if len(dataset.classes) != 2:
        if wanted is not None:
            raise DatasetError(f"--positive only applies to two labels; found {len(dataset.classes)}.")
        return None
    return wanted or dataset.classes[1]


def _head_input(wanted: str, choice: WeightsChoice) -> str:
    kind = head_inputs.resolve(wanted, choice.include_top)
    if kind == head_inputs.IMAGENET_GROUPS and not choice.include_top:
        raise ConfigError("--head-input imagenet_groups needs ImageNet weights with their top (the 1,000-class "
                          "layer); these weights have none. Use --head-input pooled.")
    return kind


def _featurise(config: FitConfig, store: ObjectStore, dataset: Dataset, spec: BackboneSpec, choice: WeightsChoice,
               model: Backbone, kind: str) -> tuple[dict[str, np.ndarray], list[Unreadable], ExtractionStats, int]:
    cache = None
    todo: list[Item] = list(dataset.items)
    feats: dict[str, np.ndarray] = {}
    if config.cache_prefix is not None:
        cache = FeatureCache(store, config.cache_prefix, namespace(spec.name, choice.identity, spec.input_size, kind))
        cache.load()
        feats, todo = cache.lookup(dataset.items)
    hits = len(feats)

    backbone = model.features(spec) if todo else (lambda batch: batch)  # nothing to compute: load nothing
    new, unreadable, stats = extract(todo, store, backbone, size=spec.input_size, limits=config.limits,
                                     batch_size=config.batch_size, workers=config.workers, progress=config.progress)
    if cache is not None:
        cache.add(todo, new)
    return feats | new, unreadable, stats, hits


def _usable(dataset: Dataset, unreadable: list[Unreadable], max_share: float) -> list[Item]:
    bad = {u.key for u in unreadable}
    share = len(bad) / max(1, len(dataset.items))
    if share > max_share:
        sample = ", ".join(sorted(bad)[:5])
        raise DatasetError(f"{len(bad)} of {len(dataset.items)} images ({share:.1%}) could not be decoded, over the "
                           f"{max_share:.0%} limit (e.g. {sample}); fix or remove them, or raise --max-unreadable.",
                           bucket=dataset.bucket, prefix=dataset.prefix)
    return [i for i in dataset.items if i.key not in bad]


def _subset(dataset: Dataset, items: list[Item]) -> Dataset:
    return Dataset(dataset.bucket, dataset.prefix, tuple(items), dataset.classes, dataset.skipped_non_image)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _report(config: FitConfig, dataset: Dataset, spec: BackboneSpec, choice: WeightsChoice, cv: CVResult,
            stats: ExtractionStats, hits: int, unreadable: list[Unreadable], version: str,
            positive: str | None) -> dict[str, Any]:
    return {
        "version": version, "backbone": spec.name, "weights": choice.to_dict(), "seed": config.seed,
        "classes": list(dataset.classes), "positive_class": positive, "threshold": cv.threshold,
        "threshold_choice": None if cv.threshold_choice is None else cv.threshold_choice.to_doc(),
        "dataset": {"bucket": dataset.bucket, "prefix": dataset.prefix, "fingerprint": dataset.fingerprint,
                    "n_images": len(dataset.items), "counts": dataset.counts,
                    "skipped_non_image": dataset.skipped_non_image, "ungrouped": dataset.ungrouped,
                    "unreadable": [u.__dict__ for u in unreadable]},
        "features": {"computed": stats.computed, "cache_hits": hits, "seconds": round(stats.seconds, 3),
                     "images_per_second": round(stats.images_per_second, 2),
                     "cache_prefix": config.cache_prefix},
        "cv": {"folds_k": config.folds, "grouped": cv.grouped, "folds": cv.folds, "mean": cv.summary["mean"],
               "std": cv.summary["std"], "oof": cv.oof, "threshold_curves": cv.threshold_curves},
        "head": {"type": "lightgbm", "params": cv.params},
    }


def _save(config: FitConfig, store: ObjectStore, spec: BackboneSpec, choice: WeightsChoice, model: Backbone,
          final: Any, data: tuple[np.ndarray, np.ndarray, list[Item]], cv: CVResult, rep: dict[str, Any],
          class_index: Path, clock: Clock) -> dict[str, Any]:
    X, y, items = data
    with tempfile.TemporaryDirectory(prefix="cctv-bundle-") as tmp:
        out = Path(tmp)  # always a fresh folder: nothing stale can slip into the bundle
        exported = _export(config, store, spec, model, final, X, items, out, class_index)
        gate = _gate(config, store, out, _manifest(rep, spec, choice, exported, clock))
        rep["promotion"] = None if gate is None else gate.to_doc()
        report_mod.write(rep, out, y, cv.oof_probs)
        manifest, manifest_sha = bundle.write_manifest(out, _manifest(rep, spec, choice, exported, clock),
                                                         complete=True)
        if config.out is not None:
            _copy_out(out, config.out)
        prefix = bundle.upload_bundle(store, out, config.model_prefix, rep["version"])
        if gate is not None:
            training_gate.write_evaluations(gate, store, config.model_prefix, rep["version"], config.limits,
                                            spec.input_size)
        latest = None
        if config.promote and (gate is None or gate.promote):
            based_on = rep["promotion"] or {"gate": None, "reason": "no --test-prefix: promoted on cross-validation"}
            latest = bundle.promote(store, config.model_prefix, rep["version"], manifest_sha,
                                    manifest.raw["created_at"], based_on=based_on)
    where = f"s3://{store.bucket}/{prefix}"
    if gate is not None and not gate.promote and config.promote:
        print(report_mod.markdown(rep), file=sys.stderr)
        raise PromotionRefusedError(f"Bundle {rep['version']} was written to {where} but not promoted: {gate.reason} "
                                    f"on {config.test_prefix}. Pass --force to promote it anyway.",
                                    version=rep["version"])
    summary = (f"Bundle {rep['version']} written to {where}" + (f" and {config.out}" if config.out else "")
               + (f"; promoted in s3://{store.bucket}/{latest}." if latest else "; not promoted (--no-promote)."))
    return {"version": rep["version"], "s3_prefix": where, "manifest": manifest.raw, "report": rep,
            "summary": summary, "promoted": latest is not None}


def _gate(config: FitConfig, store: ObjectStore, out: Path, manifest: ManifestDoc) -> training_gate.GateResult | None:
    if config.test_prefix is None:
        return None
    return training_gate.run(store, config.model_prefix, config.test_prefix, out, dict(manifest),
                             margin=config.gate_margin, forced=config.force, limits=config.limits,
                             workers=config.workers)


def check_out_dir(out: Path | None) -> None:
    """Refuse a non-empty --out that is not an earlier bundle, before any work is done."""
    if out is None or not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the local copy of the bundle.")
    if any(out.iterdir()) and not (out / bundle.MANIFEST).is_file():
        raise ConfigError(f"--out {out} is not empty and holds no bundle; give an empty or new folder, or an "
                          "earlier bundle folder to replace.")


def _copy_out(src: Path, out: Path) -> None:
    try:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out)
    except OSError as exc:
        raise ConfigError(f"Could not write the bundle to --out {out} ({exc.strerror or exc}); choose a writable "
                          "folder. Nothing was uploaded or promoted.") from None


def _export(config: FitConfig, store: ObjectStore, spec: BackboneSpec, model: Backbone, final: Any, X: np.ndarray,
            items: list[Item], out: Path, class_index: Path) -> tuple[bool, dict[str, Any]]:
    """Write the ONNX graphs and head.txt, check parity; return (ImageNet top-k available, parity)."""
    has_top, backbone_parity = _export_backbone(config, store, spec, model, items, out)
    export.export_head(final.booster_, X.shape[1], out / "head.onnx")
    final.booster_.save_model(str(out / "head.txt"))
    if has_top and class_index.is_file():
        _write_imagenet_classes(class_index, out / "imagenet_classes.json")
    elif has_top:
        print(f"training.fit: note: {class_index} is missing, so the bundle will not report ImageNet top-3 labels.",
              file=sys.stderr)
    parity = {"backbone": backbone_parity, "head": export.head_parity(final, out / "head.onnx", X)}
    export.check_parity(parity)
    return has_top and (out / "imagenet_classes.json").is_file(), parity


def _export_backbone(config: FitConfig, store: ObjectStore, spec: BackboneSpec, model: Backbone, items: list[Item],
                     out: Path) -> tuple[bool, dict[str, Any]]:
    """The ONNX backbone into ``out``: copied from the cache, or exported, parity-checked and cached."""
    if model.model is None:
        assert model.cached_dir is not None and model.meta is not None
        for name in ONNX_FILES:
            shutil.copyfile(model.cached_dir / name, out / name)
        return bool(model.meta["has_top"]), {**model.meta["parity"], "from_cache": model.meta["key"]}
    has_top = len(model.model.outputs) > 1
    export.export_backbone(model.model, out / "backbone.onnx", has_top=has_top)
    step = max(1, len(items) // config.parity_images)
    sample = np.stack([load_frame(store, item, spec.input_size, config.limits)
                       for item in items[::step][:config.parity_images]])
    parity = export.backbone_parity(model.model, out / "backbone.onnx", sample)
    if model.cache is not None and parity["features_ok"]:
        model.cache.put(out, has_top=has_top, parity=parity)
    return has_top, parity


def _write_imagenet_classes(class_index: Path, path: Path) -> None:
    """Keras' class index ({"0": ["n01440764", "tench"], ...}) as a plain list of 1,000 names."""
    index = json.loads(class_index.read_text())
    path.write_text(json.dumps([index[str(i)][1] for i in range(len(index))]) + "\n")


def _manifest(rep: dict[str, Any], spec: BackboneSpec, choice: WeightsChoice,
              exported: tuple[bool, dict[str, Any]], clock: Clock) -> ManifestDoc:
    """The manifest, typed by shared.manifest (write_manifest adds ``schema_version`` and ``files``)."""
    has_top, parity = exported
    backbone: BackboneDoc = {**spec.to_dict(), "weights": choice.to_dict(),  # type: ignore[typeddict-item]
                             "has_imagenet_top": has_top, "head_input": rep["head_input"],
                             "onnx_cache": rep.get("onnx_cache")}
    return {  # type: ignore[typeddict-item]  # schema_version and files come from write_manifest
        "version": rep["version"], "created_at": clock().isoformat(timespec="seconds"),
        "backbone": backbone,
        "decoder": {"version": DECODER_VERSION, "resize": RESIZE_FILTER.name.lower(), "fit": "squash",
                    "exif_orientation": True},
        "classes": rep["classes"], "positive_class": rep["positive_class"], "threshold": rep["threshold"],
        "threshold_choice": rep["threshold_choice"], "promotion": rep.get("promotion"),
        "metrics": {"folds": rep["cv"]["folds"], "mean": rep["cv"]["mean"], "std": rep["cv"]["std"],
                    "oof": rep["cv"]["oof"], "grouped": rep["cv"]["grouped"]},
        "head": rep["head"], "seed": rep["seed"],
        "dataset": {k: v for k, v in rep["dataset"].items() if k != "unreadable"}
        | {"n_unreadable": len(rep["dataset"]["unreadable"])},
        "parity": parity, "versions": _versions(),
        "onnx": {"backbone": {"input": "image", "outputs": ["features"] + (["imagenet_probs"] if has_top else [])},
                 "head": {"input": "features", "output": "probabilities"}},
    }


if __name__ == "__main__":
    sys.exit(main())
