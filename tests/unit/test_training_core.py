"""Pure training code: metrics, threshold choice, head defaults, dataset listing, cache, features."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from devstack.samples import generate
from shared.config import DecodeLimits
from shared.errors import ChanceLevelError, DatasetError
from tests.memory_store import MemoryStore
from training.cache import FeatureCache, namespace
from training.dataset import check_folds, list_dataset
from training.features import extract
from training.head import check_not_chance, cross_validate, default_params
from training.metrics import best_f1_threshold, fold_metrics, summarise

pytestmark = pytest.mark.training  # scikit-learn, LightGBM, TensorFlow: not in the function's runtime


def test_fold_metrics_binary_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = fold_metrics(y, probs, positive=1)
    assert m["accuracy"] == 0.5
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ordered
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    expected_ll = -np.mean(np.log([0.9, 0.4, 0.7, 0.2]))
    assert m["log_loss"] == pytest.approx(expected_ll)


def test_fold_metrics_multiclass_is_macro() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    m = fold_metrics(y, probs)
    assert m["accuracy"] == 0.75
    assert m["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert 0 < m["roc_auc"] <= 1


def test_fold_metrics_auc_is_nan_when_a_class_is_missing() -> None:
    m = fold_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]), positive=1)
    assert math.isnan(m["roc_auc"])


def test_summarise_mean_and_std() -> None:
    folds = [{k: v for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")} for v in (0.5, 1.0)]
    s = summarise(folds)
    assert s["mean"]["accuracy"] == 0.75 and s["std"]["accuracy"] == 0.25


def test_best_f1_threshold_separable_scores_picks_a_midpoint() -> None:
    y = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t, f1 = best_f1_threshold(y, scores)
    assert f1 == 1.0
    assert 0.3 < t < 0.7 and t == pytest.approx(0.5)


def test_best_f1_threshold_prefers_recall_when_it_pays() -> None:
    y = np.array([0, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.05, 0.15, 0.2, 0.25, 0.1, 0.01, 0.02, 0.03])
    t, f1 = best_f1_threshold(y, scores)
    assert (scores >= t).sum() == 3 and f1 == 1.0
    assert t == pytest.approx(0.125)


def test_best_f1_threshold_brute_force_agrees() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    scores = np.round(np.clip(y * 0.3 + rng.normal(0.4, 0.2, 200), 0, 1), 2)
    t, f1 = best_f1_threshold(y, scores)
    brute = max(2 * np.sum((scores >= c) & (y == 1)) / (np.sum(scores >= c) + y.sum()) for c in np.unique(scores))
    assert f1 == pytest.approx(brute)


def test_default_params_scale_with_data() -> None:
    small, large = default_params(150, 1280, seed=1), default_params(100_000, 1280, seed=1)
    assert small["min_child_samples"] < large["min_child_samples"]
    assert small["min_child_weight"] < large["min_child_weight"]
    assert small["num_leaves"] <= large["num_leaves"] <= 63
    # The notebook's min_child_weight=30 cannot split 150 rows; ours must be far below the hessian sum.
    assert small["min_child_weight"] * 30 < 150 * 0.25
    assert small["colsample_bytree"] < 1.0 and small["random_state"] == 1


def _separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, 20)).astype(np.float32)
    X[:, 0] += y * 3
    return X, y


def test_cross_validate_learns_and_is_seeded() -> None:
    X, y = _separable(100)
    a = cross_validate(X, y, n_classes=2, positive=1, folds=5, seed=7)
    b = cross_validate(X, y, n_classes=2, positive=1, folds=5, seed=7)
    assert a.summary["mean"]["roc_auc"] > 0.9
    assert np.array_equal(a.oof_probs, b.oof_probs)
    assert len(a.folds) == 5 and (a.fold_of >= 0).all()
    assert a.threshold is not None
    check_not_chance(a, y, min_auc=0.6)


def test_chance_level_head_is_refused() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 20)).astype(np.float32)
    y = np.repeat([0, 1], 50)
    cv = cross_validate(X, y, n_classes=2, positive=1, folds=5, seed=1)
    with pytest.raises(ChanceLevelError, match="no better than chance|largest class"):
        check_not_chance(cv, y, min_auc=0.6)


def test_group_folds_keep_groups_together() -> None:
    X, y = _separable(120)
    groups = np.array([f"cam{i % 6}" for i in range(120)])
    cv = cross_validate(X, y, n_classes=2, positive=1, folds=3, seed=0, groups=groups)
    for g in np.unique(groups):
        assert len(set(cv.fold_of[groups == g])) == 1
    assert cv.grouped


def _store_with_frames(labels: tuple[str, ...], per_label: int) -> MemoryStore:
    store = MemoryStore()
    for label, name, data in generate(labels, per_label, seed=1, size=(64, 48)):
        store.put(f"train/{label}/{name}", data)
    return store


def test_list_dataset_sorted_filtered_and_counts_non_images() -> None:
    store = _store_with_frames(("bus", "car", "empty"), 6)
    store.put("train/bus/notes.txt", b"x")
    store.put("train/stray.jpg", b"x")  # directly under the prefix: no label folder
    ds = list_dataset(store, "train/", labels=["bus", "car"])
    assert ds.classes == ("bus", "car")
    assert [i.key for i in ds.items] == sorted(i.key for i in ds.items)
    assert ds.counts == {"bus": 6, "car": 6}
    assert ds.skipped_non_image == 1
    assert len(ds.fingerprint) == 64
    store.put("train/car/new.jpg", b"y")
    assert list_dataset(store, "train/", labels=["bus", "car"]).fingerprint != ds.fingerprint


@pytest.mark.parametrize("layout, match", [
    ({}, "No objects"),
    ({"train/bus/a.jpg": b"x"}, "Only one label"),
    ({"train/bus/a.txt": b"x"}, "No images"),
])
def test_list_dataset_user_errors(layout: dict[str, bytes], match: str) -> None:
    store = MemoryStore()
    store.objects.update(layout)
    with pytest.raises(DatasetError, match=match):
        list_dataset(store, "train/")


def test_missing_label_and_too_few_per_fold() -> None:
    store = _store_with_frames(("bus", "car"), 3)
    with pytest.raises(DatasetError, match="truck"):
        list_dataset(store, "train/", labels=["bus", "truck"])
    with pytest.raises(DatasetError, match="at least 5 images"):
        check_folds(list_dataset(store, "train/"), 5)


def test_group_by_regex() -> None:
    store = _store_with_frames(("bus", "car"), 8)
    ds = list_dataset(store, "train/", group_by=r"(cam\d)_")
    assert {i.group for i in ds.items} == {"cam0", "cam1", "cam2", "cam3"}
    with pytest.raises(DatasetError, match="regular expression"):
        list_dataset(store, "train/", group_by="(")


def test_extract_overlaps_and_reports_unreadable_in_order() -> None:
    store = _store_with_frames(("bus", "car"), 10)
    store.put("train/car/zz_broken.jpg", b"\xff\xd8\xff garbage")
    items = list_dataset(store, "train/").items
    calls: list[int] = []

    def fake_backbone(batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.shape[1:] == (32, 32, 3)
        calls.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :4].astype(np.float32)

    feats, bad, stats = extract(items, store, fake_backbone, size=(32, 32), limits=DecodeLimits(),
                                batch_size=8, workers=3, progress=False)
    assert calls == [4, 8, 8]  # a small first batch starts the backbone early, then full batches
    assert len(feats) == 20 and stats.computed == 20
    assert [u.key for u in bad] == ["train/car/zz_broken.jpg"]
    assert bad[0].error.endswith("Error")


def test_feature_cache_round_trip_and_namespacing() -> None:
    store = _store_with_frames(("bus", "car"), 3)
    items = list_dataset(store, "train/").items
    ns = namespace("mobilenet_v2", "sha-abc", (224, 224))
    assert ns != namespace("mobilenet_v2", "sha-def", (224, 224))
    cache = FeatureCache(store, "cache/", ns)
    assert cache.load() == 0
    feats = {i.key: np.full(4, n, dtype=np.float32) for n, i in enumerate(items)}
    shard = cache.add(items, feats)
    assert shard is not None and shard.endswith(".npz")
    fresh = FeatureCache(store, "cache/", ns)
    assert fresh.load() == len(items)
    hits, misses = fresh.lookup(items)
    assert not misses and all(np.array_equal(hits[k], v) for k, v in feats.items())
    store.put(items[0].key, b"changed")  # a new ETag must miss
    changed = list_dataset(store, "train/").items
    hits, misses = fresh.lookup(changed)
    assert [m.key for m in misses] == [items[0].key]


def test_group_by_needs_every_class_in_enough_groups() -> None:
    store = MemoryStore()
    for label, name, data in generate(("bus", "car"), 8, seed=1, size=(32, 24)):
        # every bus frame comes from one camera: no fold could train on buses
        camera = "camA" if label == "bus" else name.split("_")[0]
        store.put(f"train/{label}/{camera}_{name}", data)
    ds = list_dataset(store, "train/", group_by=r"^[a-z]+/(cam\w)_")
    with pytest.raises(DatasetError, match="bus is in 1"):
        check_folds(ds, 3, grouped=True)


def test_cv_places_probabilities_by_label_when_a_fold_lacks_a_class() -> None:
    X, y = _separable(90)
    y = y.copy()
    y[:6] = 2  # a rare third class, all in one group
    groups = np.array(["rare" if i < 6 else f"g{i % 5}" for i in range(90)])
    cv = cross_validate(X, y, n_classes=3, positive=None, folds=3, seed=0, groups=groups)
    rare_rows = cv.oof_probs[:6]
    assert rare_rows.shape == (6, 3) and np.allclose(cv.oof_probs.sum(axis=1), 1)
    assert np.all(rare_rows[:, 2] == 0)  # its fold's model never saw class 2: probability 0, not misplaced


def test_onnx_cache_round_trip_and_damage(tmp_path: Path) -> None:
    from shared.backbones import get_backbone
    from training.onnx_cache import OnnxCache, cache_key

    spec = get_backbone("mobilenet_v2")
    key = cache_key(spec, "weights-a", "pooled")
    assert key != cache_key(spec, "weights-b", "pooled") != cache_key(spec, "weights-a", "imagenet_groups")
    store = MemoryStore("b")
    cache = OnnxCache(store, "cache/onnx/", key)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "backbone.onnx").write_bytes(b"graph")
    (src / "backbone.onnx.data").write_bytes(b"weights" * 10)
    assert cache.fetch(dst) is None  # a miss
    cache.put(src, has_top=True, parity={"features_max_abs_diff": 1e-6, "features_ok": True})
    meta = cache.fetch(dst)
    assert meta is not None and meta["has_top"] is True and meta["parity"]["features_ok"] is True
    assert (dst / "backbone.onnx.data").read_bytes() == b"weights" * 10
    store.put(f"cache/onnx/{key}/backbone.onnx.data", b"tampered")
    assert cache.fetch(tmp_path) is None  # damaged: ignored (and replaced by the next export)


def test_threshold_rule_finds_the_known_optimum_of_two_equal_gaussians() -> None:
    """Equal priors, equal spreads around 0.35 and 0.65: the right cut is 0.5."""
    from training.threshold import choose_threshold

    rng = np.random.default_rng(11)
    y = np.repeat([0, 1], 300)
    scores = np.clip(np.where(y == 1, 0.65, 0.35) + rng.normal(0, 0.1, len(y)), 0, 1)
    choice = choose_threshold(y, scores, seed=1)
    assert choice.value == pytest.approx(0.5, abs=0.03)
    assert choice.interval[0] < 0.5 < choice.interval[1] and 0 < choice.uncertainty < 0.1
    assert choice.bootstraps == 500


def test_threshold_rule_centres_a_gap_and_its_uncertainty_shows_a_lucky_score() -> None:
    """Separable scores with a gap from 0.3 to 0.7: the cut is the gap's centre, and sure of it.

    One positive at 0.32 makes the single best cut 0.31; it is in most resamples, so the
    median follows it, but the reported uncertainty grows to span the gap's centre: the
    luck is visible in the manifest and the report.
    """
    from training.threshold import choose_threshold

    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 100)
    scores = np.where(y == 1, rng.uniform(0.7, 1.0, 200), rng.uniform(0.0, 0.3, 200))
    base = choose_threshold(y, scores, seed=2)
    assert base.value == pytest.approx(0.5, abs=0.01) and base.uncertainty < 0.01
    lucky = scores.copy()
    lucky[np.argmin(np.where(y == 1, scores, 9))] = 0.32
    moved = choose_threshold(y, lucky, seed=2)
    assert moved.best_f1_cut == pytest.approx(0.31, abs=0.01)
    assert moved.uncertainty > 10 * base.uncertainty and moved.interval[0] < 0.32 and moved.interval[1] >= 0.5


def test_threshold_curves_known_values() -> None:
    from training.threshold import curves

    out = curves(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), np.array([0.05, 0.5, 0.95]))
    assert out["accuracy"] == [0.5, 0.5, 0.5] and out["f1"] == [pytest.approx(0.6667, abs=1e-4), 0.5, 0.0]


def test_head_input_features_match_their_numpy_twin() -> None:
    from training.head_input import GROUPS, N_IMAGENET, describe, numpy_features

    probs = np.full((2, N_IMAGENET), 1e-4, dtype=np.float32)
    probs[0, 817] = 0.9  # sports_car
    probs[1, 874] = 0.9  # trolleybus
    feats = numpy_features(probs)
    assert feats.shape == (2, describe("imagenet_groups", 1280)["dim"])
    car, bus = list(GROUPS).index("car"), list(GROUPS).index("bus")
    shares = feats[:, N_IMAGENET + len(GROUPS) + 1:]
    assert shares[0, car] > shares[0, bus] and shares[1, bus] > shares[1, car]
