"""Packing numpy arrays into the wire messages of tensor.proto, and back.

Light on purpose (numpy and the generated code only), so clients such as the gateway
can import it without pulling in torch.
"""

from __future__ import annotations

import numpy as np

from tattoo_search.v1 import tensor_pb2


def float_matrix(array: np.ndarray) -> tensor_pb2.FloatMatrix:
    matrix = np.ascontiguousarray(array, dtype="<f4")
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D array, got shape {matrix.shape}")
    return tensor_pb2.FloatMatrix(rows=matrix.shape[0], cols=matrix.shape[1], data=matrix.tobytes())


def index_matrix(array: np.ndarray) -> tensor_pb2.IndexMatrix:
    matrix = np.ascontiguousarray(array, dtype="<i4")
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {matrix.shape}")
    return tensor_pb2.IndexMatrix(rows=matrix.shape[0], cols=matrix.shape[1], data=matrix.tobytes())


def to_numpy(matrix: tensor_pb2.FloatMatrix | tensor_pb2.IndexMatrix) -> np.ndarray:
    dtype = "<f4" if isinstance(matrix, tensor_pb2.FloatMatrix) else "<i4"
    expected = matrix.rows * matrix.cols * 4
    if len(matrix.data) != expected:
        raise ValueError(f"matrix of {matrix.rows}x{matrix.cols} carries {len(matrix.data)} bytes, expected {expected}")
    return np.frombuffer(matrix.data, dtype=dtype).reshape(matrix.rows, matrix.cols)
