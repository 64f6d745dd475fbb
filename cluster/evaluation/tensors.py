"""What a TFLite flatbuffer stores: its constant tensors, their dtypes and values.

Used to check a compressed artifact really is what its recipe claims: int8
kernels after quantization, few distinct values per kernel after weight
clustering, zeros after pruning.

Each constant gets a role from the op that consumes it: `kernel` (the weights
input of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, ...), `bias`, or `other`
(reshape targets, padding sizes, ...). A constant stored compressed and
expanded at run time by a DEQUANTIZE or DENSIFY op (float16 or dynamic-range
models) takes the role of the tensor it expands into.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# LiteRT's copy of the TFLite flatbuffer schema: reading a file's tensors needs no TensorFlow.
from ai_edge_litert import schema_py_generated as schema

from cluster.evaluation.errors import ArtifactError
from cluster.evaluation.interpreter import open_interpreter, read_tflite

# op name -> (input position of the kernel, input position of the bias or None)
WEIGHT_INPUTS = {
    "FULLY_CONNECTED": (1, 2),
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "CONV_3D": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
    "BATCH_MATMUL": (1, None),
    "EMBEDDING_LOOKUP": (1, None),
}
# Ops that expand a stored constant into the tensor another op consumes.
EXPANDING_OPS = {"DEQUANTIZE", "DENSIFY"}

TENSOR_TYPE_NAMES = {value: name.lower() for name, value in vars(schema.TensorType).items()
                     if not name.startswith("_")}
OPERATOR_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}
NUMPY_DTYPES = {name: np.dtype(name) for name in (
    "float16", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "bool")}


@dataclass(frozen=True)
class ConstantTensor:
    """One constant tensor of the flatbuffer."""

    name: str
    dtype: str  # lower-case TFLite type name: 'float32', 'int8', 'int4', ...
    shape: tuple[int, ...]
    role: str  # 'kernel', 'bias' or 'other'
    op: str | None  # the op that consumes it (after expansion), if any
    size: int  # number of elements
    num_unique: int | None  # distinct stored values; None for packed/string types
    # For per-channel quantized tensors: most distinct values in one channel
    # (a clustered kernel keeps <= n_clusters per channel after int8
    # quantization, while its channels' scales differ).
    max_unique_per_channel: int | None = None


def constant_tensors(path: str | os.PathLike) -> list[ConstantTensor]:
    """Every constant tensor stored in the .tflite file at `path`."""
    data = read_tflite(path)
    # The interpreter runs the flatbuffer verifier; parsing an unverified,
    # corrupt buffer could read garbage instead of failing.
    open_interpreter(path, data, num_threads=1)
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    except Exception as exc:  # the generated parser raises assorted types
        raise ArtifactError(path, f"cannot parse TFLite flatbuffer: {exc}") from exc

    found = []
    for subgraph in model.subgraphs:
        roles = _roles(model, subgraph)
        for index, tensor in enumerate(subgraph.tensors):
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            if buffer is None or buffer.data is None or len(buffer.data) == 0 or tensor.isVariable:
                continue
            role, op = roles.get(index, ("other", None))
            found.append(_describe(tensor, np.asarray(buffer.data, dtype=np.uint8), role, op))
    return found


def weight_dtypes(path: str | os.PathLike, roles: tuple[str, ...] | None = ("kernel", "bias")) -> dict[str, int]:
    """How many constant tensors of each dtype, e.g. {'int8': 4, 'int32': 4}.

    By default only kernels and biases count; `roles=None` counts every constant.
    """
    counts: dict[str, int] = {}
    for tensor in constant_tensors(path):
        if roles is None or tensor.role in roles:
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + 1
    return counts


def unique_value_counts(path: str | os.PathLike, roles: tuple[str, ...] = ("kernel",)) -> dict[str, int | None]:
    """Distinct stored values per tensor name, for kernels by default."""
    return {t.name: t.num_unique for t in constant_tensors(path) if t.role in roles}


def _roles(model, subgraph) -> dict[int, tuple[str, str]]:
    """tensor index -> (role, consuming op name) from the ops' inputs."""
    roles: dict[int, tuple[str, str]] = {}
    expanded_from: dict[int, int] = {}  # output of DEQUANTIZE/DENSIFY -> its stored input
    for op in subgraph.operators or []:
        name = _op_name(model, op.opcodeIndex)
        inputs = [] if op.inputs is None else [int(i) for i in op.inputs]
        if name in EXPANDING_OPS and inputs and op.outputs is not None and len(op.outputs):
            expanded_from[int(op.outputs[0])] = inputs[0]
        positions = WEIGHT_INPUTS.get(name)
        if positions is None:
            continue
        for role, position in zip(("kernel", "bias"), positions):
            if position is not None and position < len(inputs) and inputs[position] >= 0:
                roles[inputs[position]] = (role, name)
    for expanded, stored in expanded_from.items():
        if expanded in roles:
            roles[stored] = roles[expanded]
    return roles


def _op_name(model, opcode_index: int) -> str:
    code = model.operatorCodes[opcode_index]
    if code.customCode:
        return code.customCode.decode("utf-8", "replace")
    # Old files keep small codes in the deprecated field only.
    return OPERATOR_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")


def _describe(tensor, raw: np.ndarray, role: str, op: str | None) -> ConstantTensor:
    dtype = TENSOR_TYPE_NAMES.get(tensor.type, f"type{tensor.type}")
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    size = int(np.prod(shape)) if shape else 1
    name = tensor.name.decode("utf-8", "replace") if isinstance(tensor.name, bytes) else str(tensor.name)
    num_unique = per_channel = None
    np_dtype = NUMPY_DTYPES.get(dtype)
    if np_dtype is not None and raw.size == size * np_dtype.itemsize:
        # Flatbuffers store little-endian data.
        values = raw.view(np_dtype.newbyteorder("<")).reshape(shape)
        num_unique = int(np.unique(values).size)
        per_channel = _max_unique_per_channel(values, tensor.quantization)
    return ConstantTensor(name, dtype, shape, role, op, size, num_unique, per_channel)


def _max_unique_per_channel(values: np.ndarray, quantization) -> int | None:
    scales = None if quantization is None else quantization.scale
    if scales is None or len(scales) <= 1 or values.ndim == 0:
        return None
    axis = int(quantization.quantizedDimension)
    channels = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return max(int(np.unique(channel).size) for channel in channels)
