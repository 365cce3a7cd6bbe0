"""List a labelled dataset laid out as ``s3://bucket/<prefix>/<label>/...``."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from collections.abc import Iterable

from shared.errors import DatasetError
from shared.storage import ObjectInfo, ObjectStore

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Item:
    key: str
    label: str
    etag: str
    size: int
    group: str


@dataclasses.dataclass(frozen=True)
class Dataset:
    bucket: str
    prefix: str
    items: tuple[Item, ...]
    classes: tuple[str, ...]
    skipped_non_image: int
    ungrouped: int = 0

    @property
    def counts(self) -> dict[str, int]:
        counter = collections.Counter(item.label for item in self.items)
        return {label: counter[label] for label in self.classes}

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted keys and ETags: any added, removed or changed frame changes it."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.key}\t{item.etag}\n".encode())
        return digest.hexdigest()


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def _label_of(key: str, prefix: str) -> str | None:
    rest = key[len(prefix):]
    label, sep, name = rest.partition("/")
    return label if sep and label and name else None


def _group_of(key: str, prefix: str, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return key
    match = pattern.search(key[len(prefix):])
    if match is None:
        return None
    return match.group(1) if match.groups() else match.group(0)


def list_dataset(store: ObjectStore, prefix: str, *, labels: Iterable[str] | None = None,
                 group_by: str | None = None) -> Dataset:
    """List, filter and validate the labelled frames under ``prefix`` (sorted by key)."""
    pattern = _compile(group_by)
    wanted = set(labels) if labels else None
    items: list[Item] = []
    skipped = ungrouped = 0
    objects: list[ObjectInfo] = sorted(store.list(prefix), key=lambda o: o.key)
    for obj in objects:
        label = _label_of(obj.key, prefix)
        if label is None or (wanted is not None and label not in wanted):
            continue
        if not is_image_key(obj.key):
            skipped += 1
            continue
        group = _group_of(obj.key, prefix, pattern)
        if group is None:
            ungrouped += 1
            group = obj.key  # a frame the pattern misses stays in a group of its own
        items.append(Item(obj.key, label, obj.etag, obj.size, group))
    classes = tuple(sorted({item.label for item in items}))
    _check_labels(store.bucket, prefix, classes, wanted, len(objects))
    return Dataset(store.bucket, prefix, tuple(items), classes, skipped, ungrouped)


def _compile(group_by: str | None) -> re.Pattern[str] | None:
    if not group_by:
        return None
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise DatasetError(f"--group-by {group_by!r} is not a valid regular expression ({exc}).") from None


def _check_labels(bucket: str, prefix: str, classes: tuple[str, ...], wanted: set[str] | None,
                  n_objects: int) -> None:
    where = f"s3://{bucket}/{prefix}"
    if n_objects == 0:
        raise DatasetError(f"No objects under {where}; upload images as {where}<label>/<file>.jpg or pass "
                           "the right --prefix.", bucket=bucket, prefix=prefix)
    if wanted is not None and (missing := sorted(wanted - set(classes))):
        raise DatasetError(f"No images for label(s) {', '.join(missing)} under {where}; found: "
                           f"{', '.join(classes) or 'none'}.", bucket=bucket, prefix=prefix)
    if not classes:
        raise DatasetError(f"No images in label folders under {where}; lay them out as {where}<label>/<file>.jpg.",
                           bucket=bucket, prefix=prefix)
    if len(classes) < 2:
        raise DatasetError(f"Only one label ({classes[0]}) under {where}; a classifier needs at least two "
                           "label folders.", bucket=bucket, prefix=prefix)


def check_folds(dataset: Dataset, folds: int, *, grouped: bool = False) -> None:
    if grouped:
        _check_groups(dataset, folds)
    small = {label: n for label, n in dataset.counts.items() if n < folds}
    if small:
        detail = ", ".join(f"{label} has {n}" for label, n in sorted(small.items()))
        raise DatasetError(f"Each class needs at least {folds} images for {folds}-fold cross-validation, but "
                           f"{detail}; add images or lower --folds.", bucket=dataset.bucket, prefix=dataset.prefix)


def _check_groups(dataset: Dataset, folds: int) -> None:
    """Grouped folds need every class spread over at least ``folds`` groups.

    Otherwise some fold holds all of a class (say, the one camera that sees buses) and
    its model never learns that class, so the CV figures would be meaningless.
    """
    groups: dict[str, set[str]] = collections.defaultdict(set)
    for item in dataset.items:
        groups[item.label].add(item.group)
    thin = {label: len(g) for label, g in groups.items() if len(g) < folds}
    if thin:
        detail = ", ".join(f"{label} is in {n}" for label, n in sorted(thin.items()))
        raise DatasetError(f"--group-by puts each class in too few groups for {folds} folds ({detail}); every class "
                           "needs frames from at least as many groups (cameras, sequences) as folds. Use a "
                           "broader pattern, lower --folds, or add data.", bucket=dataset.bucket,
                           prefix=dataset.prefix)
