"""ONNX Runtime session-option variants, applied by patching ``shared.runtime.session_options``.

The benchmarks build the real :class:`shared.runtime.Classifier` under each variant, so what
is measured is the shipped code path with one option changed.  ``baseline`` is the shipped
``session_options()`` untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VARIANTS = {
    "baseline": "shared.runtime.session_options() as shipped (ORT_ENABLE_ALL, intra-op threads = ORT default)",
    "threads=1": "intra_op_num_threads=1",
    "threads=2": "intra_op_num_threads=2",
    "no-spin": "session config session.intra_op.allow_spinning=0 (idle pool threads sleep instead of spinning)",
    "threads=1,no-spin": "intra_op_num_threads=1 and allow_spinning=0",
    "threads=2,no-spin": "intra_op_num_threads=2 and allow_spinning=0",
    "opt=extended": "graph_optimization_level=ORT_ENABLE_EXTENDED",
    "opt=basic": "graph_optimization_level=ORT_ENABLE_BASIC",
    "opt=disable": "graph_optimization_level=ORT_DISABLE_ALL",
    "no-arena": "enable_cpu_mem_arena=False (no CPU memory arena)",
    "fixed-batch=1": "the backbone's free batch dimension pinned to 1 (add_free_dimension_override_by_name)",
}


def batch_dim_name(bundle_dir: Path) -> str | None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle_dir / "backbone.onnx"), providers=["CPUExecutionProvider"])
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, str) else None


def _options_factory(variant: str, batch_dim: str | None) -> Any:
    import onnxruntime as ort

    import shared.runtime as rt

    original = rt.session_options

    def options(threads: int | None = None) -> Any:
        opts = original(threads)
        for part in variant.split(","):
            if part == "baseline":
                continue
            if part.startswith("threads="):
                opts.intra_op_num_threads = int(part.split("=")[1])
            elif part == "no-spin":
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            elif part.startswith("opt="):
                opts.graph_optimization_level = {
                    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                }[part.split("=")[1]]
            elif part == "no-arena":
                opts.enable_cpu_mem_arena = False
            elif part == "fixed-batch=1":
                if batch_dim:
                    opts.add_free_dimension_override_by_name(batch_dim, 1)
            else:
                raise ValueError(f"unknown ORT variant {part!r}")
        return opts

    return options


@contextlib.contextmanager
def patched(variant: str, batch_dim: str | None = None) -> Iterator[None]:
    import shared.runtime as rt

    original = rt.session_options
    rt.session_options = _options_factory(variant, batch_dim)
    try:
        yield
    finally:
        rt.session_options = original


def classifier(bundle_dir: Path, variant: str = "baseline") -> Any:
    from shared.runtime import Classifier

    batch_dim = batch_dim_name(bundle_dir) if "fixed-batch" in variant else None
    with patched(variant, batch_dim):
        return Classifier.from_dir(bundle_dir)
