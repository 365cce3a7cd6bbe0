"""The promotion gate: a new bundle replaces the promoted one only if it is not worse on a held-out set.

``training.fit --test-prefix P`` scores the new bundle and the currently promoted one on
the same labelled frames, through the serving path (``training.evaluate``).  The new one is
promoted when its accuracy is at least the current one's minus ``--gate-margin`` (default
0.01) and its ROC AUC (binary heads) at least the current one's minus the same margin, or
when ``--force`` is given.  Both evaluations go into the new bundle's report and manifest,
and ``models/latest.json`` records what the promotion was based on.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from shared import bundle
from shared.config import DecodeLimits, FunctionSettings
from shared.errors import BundleNotFoundError
from shared.runtime import Classifier
from shared.storage import ObjectStore
from training import eval_report
from training.dataset import list_dataset
from training.evaluate import LoadedModel, evaluate, load_version, service_settings

METRICS = ("accuracy", "roc_auc")
DEFAULT_MARGIN = 0.01


@dataclasses.dataclass(frozen=True)
class GateResult:
    promote: bool
    forced: bool
    reason: str
    test_prefix: str
    margin: float
    new: dict[str, Any]  # the new bundle's evaluation
    previous: dict[str, Any] | None  # the promoted bundle's, or None when there was none

    def to_doc(self) -> dict[str, Any]:
        def brief(ev: dict[str, Any] | None) -> dict[str, Any] | None:
            if ev is None:
                return None
            m = ev["metrics"]
            return {"version": ev["model"]["version"], "n": ev["dataset"]["n_scored"],
                    "n_unreadable": len(ev["dataset"]["unreadable"]), "confusion_matrix": m["confusion_matrix"],
                    **{k: m[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")}}

        return {"gate": "not worse than the promoted model on the test set", "test_prefix": self.test_prefix,
                "metrics": list(METRICS), "margin": self.margin, "promote": self.promote, "forced": self.forced,
                "reason": self.reason, "new": brief(self.new), "previous": brief(self.previous)}


def decide(new: dict[str, float], previous: dict[str, float] | None, *, margin: float,
           forced: bool) -> tuple[bool, str]:
    """Whether to promote, and why, from the two sets of metrics."""
    if previous is None:
        return True, "no model was promoted before"
    worse = [f"{k} {new[k]:.4f} < {previous[k]:.4f} - {margin}" for k in METRICS
             if _finite(new.get(k)) and _finite(previous.get(k)) and new[k] < previous[k] - margin]
    if not worse:
        return True, f"not worse than the promoted model by more than {margin} in {' or '.join(METRICS)}"
    if forced:
        return True, "forced (--force) although worse: " + "; ".join(worse)
    return False, "worse than the promoted model: " + "; ".join(worse)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def run(store: ObjectStore, model_prefix: str, test_prefix: str, bundle_dir: Path, manifest_doc: dict[str, Any],
        *, margin: float, forced: bool, limits: DecodeLimits, workers: int) -> GateResult:
    """Evaluate the new bundle (still a local folder) and the promoted one on ``test_prefix``."""
    dataset = list_dataset(store, test_prefix)
    manifest = bundle.Manifest(manifest_doc)
    new_model = LoadedModel(Classifier(bundle_dir, manifest), manifest.version, "this run", lambda name: name)
    settings = FunctionSettings(limits=limits, max_workers=workers)
    new = evaluate(dataset, store, new_model, settings=service_settings(settings, test_prefix, manifest.version,
                                                                         "gate-new"))
    previous = None
    with tempfile.TemporaryDirectory(prefix="cctv-gate-") as tmp:
        try:
            version, sha = bundle.resolve_version(store, model_prefix, None)
        except BundleNotFoundError:
            version = None
        if version is not None:
            old = load_version(store, model_prefix, version, sha, Path(tmp))
            previous = evaluate(dataset, store, old, settings=service_settings(settings, test_prefix,
                                                                                 manifest.version, "gate-previous"))
    promote, reason = decide(new["metrics"], None if previous is None else previous["metrics"], margin=margin,
                             forced=forced)
    return GateResult(promote, forced, reason, test_prefix, margin, new, previous)


def write_evaluations(gate: GateResult, store: ObjectStore, model_prefix: str, version: str,
                      limits: DecodeLimits, input_size: tuple[int, int]) -> list[str]:
    """Both full evaluations under the new bundle's ``evaluation/`` (after its upload: bundles are never added to)."""
    written = []
    for name, ev in (("gate-new", gate.new), ("gate-previous", gate.previous)):
        if ev is not None:
            ev = {**ev, "name": name}
            written.append(eval_report.write(ev, store, f"{model_prefix}{version}/evaluation/{name}/", None,
                                             limits=limits, input_size=input_size))
    return written


def markdown(doc: dict[str, Any]) -> str:
    """The gate's section of the training report."""
    lines = [f"## Promotion gate: {'promote' if doc['promote'] else 'REFUSED'}", "",
             f"Test set `{doc['test_prefix']}`; {doc['reason']}.", "",
             "| model | n | accuracy | precision | recall | f1 | roc_auc | log_loss |", "|---" * 8 + "|"]
    for role in ("new", "previous"):
        ev = doc[role]
        if ev is not None:
            lines.append(f"| {role} ({ev['version']}) | {ev['n']} | " + " | ".join(
                eval_report._fmt(ev[k]) for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"))
                + " |")
    return "\n".join(lines)
