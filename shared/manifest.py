"""The bundle manifest's schema: one typed description that training writes and the function reads.

``ManifestDoc`` is what ``manifest.json`` holds.  Fields marked ``Required`` are what any
reader needs (the function runs on them); the rest are what ``training.fit`` always
writes.  :func:`problems` checks a document against these types at run time: the
function checks what it reads (``complete=False``), training checks the whole document it
writes (``complete=True``), and a test holds the two to the same schema.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Required, TypedDict, Union

# Nested documents are ``total=False`` so that a reader asks only for the ``Required`` keys;
# ``complete=True`` (the writer's check) asks for every key all the same.


class FileDoc(TypedDict, total=False):
    sha256: Required[str]
    size: int


class WeightsDoc(TypedDict, total=False):
    source: str  # "imagenet", "file" or "random" (a smoke model: every result says so)
    file: str | None
    include_top: bool
    identity: str
    note: str | None


class HeadInputDoc(TypedDict, total=False):
    """What the backbone's ``features`` output (the head's input) is made of."""

    kind: str  # "pooled" or "imagenet_groups"
    dim: int
    groups: dict[str, list[str]]  # ImageNet class groups (empty for "pooled")


class BackboneDoc(TypedDict, total=False):
    name: Required[str]
    input_size: Required[list[int]]  # (width, height)
    has_imagenet_top: bool
    keras_application: str
    feature_dim: int
    preprocessing: dict[str, Any]
    weights: WeightsDoc
    head_input: HeadInputDoc
    onnx_cache: str | None  # the cache key of a reused exported backbone, or None


class ThresholdDoc(TypedDict, total=False):
    """How the binary decision threshold was chosen, and how sure that choice is."""

    value: float
    rule: str
    uncertainty: float  # half the central 90% interval of the bootstrap cuts
    interval: list[float]  # [5th, 95th] percentile of the bootstrap cuts
    bootstraps: int
    best_f1_cut: float  # the single best out-of-fold cut, for comparison


class ManifestDoc(TypedDict, total=False):
    schema_version: Required[int]
    version: Required[str]
    classes: Required[list[str]]
    backbone: Required[BackboneDoc]
    files: Required[dict[str, FileDoc]]
    positive_class: str | None
    threshold: float | None
    threshold_choice: ThresholdDoc | None
    created_at: str
    decoder: dict[str, Any]
    metrics: dict[str, Any]
    head: dict[str, Any]
    seed: int
    dataset: dict[str, Any]
    parity: dict[str, Any]
    versions: dict[str, str]
    onnx: dict[str, Any]
    promotion: dict[str, Any] | None


def problems(doc: Any, schema: type = ManifestDoc, *, complete: bool = False, where: str = "manifest") -> list[str]:
    """What in ``doc`` does not match ``schema``; empty when it matches.

    ``complete`` asks for every field (what training writes), else only the required ones.
    Extra fields are allowed: a newer writer may add some.
    """
    return _check(doc, schema, complete, where)


def _check(value: Any, hint: Any, complete: bool, where: str) -> list[str]:
    if hint is Any:
        return []
    if _is_typeddict(hint):
        return _check_dict(value, hint, complete, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        results = [_check(value, arm, complete, where) for arm in args]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where} should be a list, not {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in _check(v, args[0], complete, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where} should be an object, not {type(value).__name__}"]
        return [p for k, v in value.items() for p in _check(v, args[1], complete, f"{where}.{k}")]
    return [] if _is_instance(value, hint) else [f"{where} should be {getattr(hint, '__name__', hint)}, "
                                                 f"not {type(value).__name__}"]


def _check_dict(value: Any, schema: Any, complete: bool, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} should be an object, not {type(value).__name__}"]
    hints = typing.get_type_hints(schema)
    needed = set(hints) if complete else set(schema.__required_keys__)
    found = [f"{where}.{key} is missing" for key in sorted(needed - set(value))]
    for key, hint in hints.items():
        if key in value:
            found += _check(value[key], hint, complete, f"{where}.{key}")
    return found


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is type(None):
        return value is None
    if hint is float:  # JSON has one number type; an int is a fine float, a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
