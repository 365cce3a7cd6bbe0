"""The few ONNX protobuf messages the fake bundles need, encoded without the ``onnx`` package.

The tests of ``shared/`` and ``functions/`` run in a venv that holds only the function's runtime
(``make test-runtime``), and ``onnx`` is a training dependency. onnxruntime itself is what checks
these bytes when it opens them; ``tests/unit/test_onnx_proto.py`` also compares them with what
``onnx.helper`` builds, where ``onnx`` is installed.

Field numbers are those of onnx/onnx.proto (proto2: repeated scalars are written unpacked), and fields are
written in field-number order, as protobuf serialises, so the bytes equal ``onnx``'s own.
"""

from __future__ import annotations

import numpy as np

FLOAT, UINT8 = 1, 2  # TensorProto.DataType
_ATTR_INT, _ATTR_INTS = 2, 7  # AttributeProto.AttributeType
_DTYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf writes negative numbers
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def attribute(name: str, value: int | list[int]) -> bytes:
    """AttributeProto: an int or a list of ints (all the fake graphs use)."""
    if isinstance(value, int):
        return _bytes(1, name) + _int(3, value) + _int(20, _ATTR_INT)
    return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)


def node(op_type: str, inputs: list[str], outputs: list[str], **attrs: int | list[int]) -> bytes:
    """NodeProto."""
    return (b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
            + _bytes(4, op_type) + b"".join(_bytes(5, attribute(k, v)) for k, v in sorted(attrs.items())))


def tensor(array: np.ndarray, name: str) -> bytes:
    """TensorProto holding ``array`` as little-endian raw data."""
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
    return (b"".join(_int(1, d) for d in array.shape) + _int(2, _DTYPES[array.dtype]) + _bytes(8, name)
            + _bytes(9, raw))


def value_info(name: str, elem_type: int, shape: list[int | str]) -> bytes:
    """ValueInfoProto of a tensor; a str dimension is symbolic (e.g. the batch, "N")."""
    dims = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, elem_type) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def graph(nodes: list[bytes], name: str, inputs: list[bytes], outputs: list[bytes],
          initializers: list[bytes]) -> bytes:
    """GraphProto."""
    return (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, name)
            + b"".join(_bytes(5, t) for t in initializers)
            + b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs))


def model(graph_bytes: bytes, *, opset: int, ir_version: int, producer: str) -> bytes:
    """ModelProto of one graph in the default operator domain."""
    return (_int(1, ir_version) + _bytes(2, producer) + _bytes(7, graph_bytes)
            + _bytes(8, _bytes(1, "") + _int(2, opset)))
