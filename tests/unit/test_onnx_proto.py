"""The fake bundles' hand-written ONNX encoding (tests/onnx_proto.py) against the ``onnx`` package.

``onnx`` is a training dependency, so these skip in the function's runtime venv (make test-runtime),
where onnxruntime opening the graphs is the check.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests import fakes, onnx_proto


def _onnx() -> Any:
    return pytest.importorskip("onnx", reason="onnx is a training dependency, absent from the function's runtime")


@pytest.mark.parametrize("graph", ["backbone", "backbone_with_top", "head2", "head3"])
def test_fake_graphs_are_valid_onnx_and_serialise_back_to_the_same_bytes(graph: str) -> None:
    onnx = _onnx()
    data = {"backbone": lambda: fakes._backbone((32, 24), False),
            "backbone_with_top": lambda: fakes._backbone((32, 24), True),
            "head2": lambda: fakes._head(2), "head3": lambda: fakes._head(3)}[graph]()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == data  # every field parsed, in protobuf's own order
    assert (model.ir_version, model.opset_import[0].version) == (fakes.IR_VERSION, fakes.OPSET)


def test_each_message_equals_onnx_helper() -> None:
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert onnx_proto.tensor(array, "w") == numpy_helper.from_array(array, "w").SerializeToString()
    scalar = np.array(255.0, dtype=np.float32)
    assert onnx_proto.tensor(scalar, "s") == numpy_helper.from_array(scalar, "s").SerializeToString()
    expected_node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0, axes=[1, -2])
    assert onnx_proto.node("ReduceMean", ["x"], ["y"], keepdims=0, axes=[1, -2]) == expected_node.SerializeToString()
    info = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 24, 32, 3])
    assert onnx_proto.value_info("image", onnx_proto.UINT8, ["N", 24, 32, 3]) == info.SerializeToString()
    assert onnx.__version__  # the package these bytes were compared with
