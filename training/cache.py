"""The feature cache, kept in the bucket next to the data.

Entries are keyed by (S3 key, ETag) inside a namespace derived from the backbone, the
weights identity, the decoder version and the input size, so a change to any of them
starts a fresh namespace.  Each run appends one shard of new rows as ``.npz`` holding
plain arrays only (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable

import numpy as np

from shared.bundle import sha256_bytes
from shared.imaging import DECODER_VERSION
from shared.storage import ObjectStore
from training.dataset import Item


def head_input_version() -> int:
    from training.head_input import VERSION

    return VERSION


def namespace(backbone: str, weights_identity: str, input_size: tuple[int, int], head_input: str = "pooled") -> str:
    ident: dict[str, object] = {"backbone": backbone, "weights": weights_identity, "decoder": DECODER_VERSION,
                                "input_size": list(input_size)}
    if head_input != "pooled":  # pooled keeps the namespace it always had, so old caches stay valid
        ident["head_input"] = f"{head_input}-v{head_input_version()}"
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


class FeatureCache:
    def __init__(self, store: ObjectStore, prefix: str, namespace_id: str) -> None:
        self.store = store
        self.prefix = f"{prefix}{namespace_id}/"
        self._rows: dict[tuple[str, str], np.ndarray] = {}

    def load(self) -> int:
        """Read every shard of this namespace; return the number of rows."""
        for obj in self.store.list(self.prefix):
            if not obj.key.endswith(".npz"):
                continue
            with np.load(io.BytesIO(self.store.get(obj.key).body), allow_pickle=False) as shard:
                for key, etag, row in zip(shard["keys"], shard["etags"], shard["features"], strict=True):
                    self._rows[(str(key), str(etag))] = row
        return len(self._rows)

    def lookup(self, items: Iterable[Item]) -> tuple[dict[str, np.ndarray], list[Item]]:
        """Split ``items`` into cached features (by key) and the items still to compute."""
        hits: dict[str, np.ndarray] = {}
        misses: list[Item] = []
        for item in items:
            row = self._rows.get((item.key, item.etag))
            if row is None:
                misses.append(item)
            else:
                hits[item.key] = row
        return hits, misses

    def add(self, items: Iterable[Item], features: dict[str, np.ndarray]) -> str | None:
        """Write one shard with the new rows; return its key, or None when there was nothing new."""
        rows = [(item.key, item.etag) for item in items if item.key in features]
        if not rows:
            return None
        keys = np.array([k for k, _ in rows])
        etags = np.array([e for _, e in rows])
        matrix = np.stack([features[k] for k, _ in rows]).astype(np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, keys=keys, etags=etags, features=matrix)
        data = buf.getvalue()
        key = f"{self.prefix}{sha256_bytes(data)[:16]}-{len(rows)}.npz"
        self.store.put(key, data)
        for (k, e), row in zip(rows, matrix, strict=True):
            self._rows[(k, e)] = row
        return key
