"""What an ONNX file of a bundle may contain, checked on its bytes before any runtime parses
it (device side: no onnx package; a schema-less protobuf walk)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from edgempir.errors import BundleError
from edgempir.targets.device.manifest_checks import fail, short

MAX_TENSOR_ELEMENTS = 1 << 28  # one ONNX initializer (1 GiB of float32)

# What a graph may contain before any runtime parses it. The lists are this edgempir's,
# never the bundle's: a manifest cannot widen them. Standard-domain ops only (no custom op
# libraries, no model-local functions), no control flow (subgraphs), and none of the ops
# that allocate a size computed at run time (ConstantOfShape, Expand, Tile, Range, Resize).
# Add an op here when export starts emitting it.
# The early-exit vote (targets/host/graph.py) adds NonZero and ScatterND: their outputs are
# data-dependent in *extent* but bounded by their inputs' (NonZero: at most rank x numel of
# its input's indices; ScatterND: exactly its data input's shape), so no graph input can
# make them allocate more than the batch it was given. ScatterND is allowed only without a
# ``reduction`` attribute (what the exporter writes); the attribute check below refuses it.
ONNX_DOMAINS = ("", "ai.onnx")
ALLOWED_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization",
    "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Cast", "CastLike",
    "Ceil", "Clip", "Concat", "Constant", "Conv", "ConvInteger", "DequantizeLinear", "Div",
    "Dropout", "Equal", "Erf", "Exp", "Flatten", "Floor", "Gather", "GatherElements",
    "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "MatMulInteger", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul",
    "Neg", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "Pow", "QLinearConv",
    "QLinearMatMul", "QuantizeLinear", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceSum", "Relu", "Reshape", "Round", "ScatterND", "Shape", "Sigmoid", "Sign",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "TopK",
    "Transpose", "Unsqueeze", "Where", "Xor"})
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Malformed(Exception):
    """Bytes that are not a protobuf message of the expected shape."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """(field number, wire type, value) of one protobuf message, without a schema: the
    device has no onnx package. Lengths are checked; large byte fields are not copied."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint, pos = _varint(buf, pos)
            value: int | memoryview = varint
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _Malformed(f"field {number} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _Malformed(f"field {number} runs past the end")
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise _Malformed(f"wire type {wire}")
        yield number, wire, value


def _msg(wire: int, value, what: str) -> memoryview:
    if wire != 2:
        raise _Malformed(f"{what} is not a message")
    return value


def _text(wire: int, value, what: str) -> str:
    return bytes(_msg(wire, value, what)).decode("utf-8", "replace")


class _GraphCheck:
    """Walks one ONNX file (ModelProto) and raises a BundleError on the first problem."""

    def __init__(self, bundle: Path, rel: str, listed: dict):
        self.bundle, self.rel, self.listed = bundle, rel, listed
        self.model_dir = PurePosixPath(rel).parent

    def fail(self, msg: str) -> BundleError:
        return fail(self.bundle, f"{self.rel} {msg}")

    def model(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if number == 8:  # opset_import
                for n, w, v in _fields(_msg(wire, value, "opset_import")):
                    if n == 1 and _text(w, v, "domain") not in ONNX_DOMAINS:
                        raise self.fail(f"imports operator domain {_text(w, v, 'domain')!r}; "
                                        "custom domains are not allowed")
            elif number == 7:
                self.graph(_msg(wire, value, "graph"))
            elif number == 25:
                raise self.fail("defines model-local functions, which are not allowed")
            elif number == 20:
                raise self.fail("carries training graphs, which are not allowed")

    def graph(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if number == 1:
                self.node(_msg(wire, value, "node"))
            elif number == 5:
                self.tensor(_msg(wire, value, "initializer"))
            elif number == 15:  # sparse_initializer: values and indices are tensors
                for n, w, v in _fields(_msg(wire, value, "sparse_initializer")):
                    if n in (1, 2):
                        self.tensor(_msg(w, v, "sparse tensor"))

    def node(self, buf: memoryview) -> None:
        op, domain, attributes = "", "", []
        for number, wire, value in _fields(buf):
            if number == 4:
                op = _text(wire, value, "op_type")
            elif number == 7:
                domain = _text(wire, value, "domain")
            elif number == 5:  # checked once op_type is known, whatever the field order
                attributes.append(_msg(wire, value, "attribute"))
        for attribute in attributes:
            self.attribute(attribute, op)
        if domain not in ONNX_DOMAINS:
            raise self.fail(f"uses op {op!r} of custom domain {domain!r}; custom ops are not "
                            "allowed")
        if op not in ALLOWED_OPS:
            raise self.fail(f"uses op {op!r}, which is not on the allow-list of this edgempir "
                            "(targets/device/onnx_check.py ALLOWED_OPS)")

    def attribute(self, buf: memoryview, op: str) -> None:
        for number, wire, value in _fields(buf):
            if number == 1 and op == "ScatterND" and _text(wire, value, "name") == "reduction":
                raise self.fail("has a ScatterND with a reduction; only plain ScatterND (the "
                                "early-exit vote's scatter) is allowed")
            if number in (6, 11):  # g, graphs
                raise self.fail(f"has a subgraph in op {op!r}; control flow is not allowed")
            if number in (5, 10):  # t, tensors
                self.tensor(_msg(wire, value, "attribute tensor"))
            elif number in (22, 23):  # sparse_tensor(s)
                for n, w, v in _fields(_msg(wire, value, "sparse tensor")):
                    if n in (1, 2):
                        self.tensor(_msg(w, v, "sparse tensor"))

    def tensor(self, buf: memoryview) -> None:
        dims, name, location, external = [], "", None, False
        for number, wire, value in _fields(buf):
            if number == 1:  # dims: packed or one varint each
                if wire == 2:
                    pos = 0
                    while pos < len(value):
                        d, pos = _varint(value, pos)
                        dims.append(d)
                else:
                    dims.append(value)
            elif number == 8:
                name = _text(wire, value, "name")
            elif number == 14 and wire == 0:
                external = external or value == _EXTERNAL
            elif number == 13:
                external = True
                key, val = "", ""
                for n, w, v in _fields(_msg(wire, value, "external_data")):
                    if n == 1:
                        key = _text(w, v, "key")
                    elif n == 2:
                        val = _text(w, v, "value")
                if key == "location":
                    location = val
        count = 1
        for d in dims:
            if d >= 1 << 63:  # a negative int64
                raise self.fail(f"tensor {name!r} has a negative dimension")
            count *= d
        if count > MAX_TENSOR_ELEMENTS:
            raise self.fail(f"tensor {name!r} has shape {dims}, more than "
                            f"{MAX_TENSOR_ELEMENTS} elements")
        if external:
            self.external(name, location)

    def external(self, name: str, location: str | None) -> None:
        """External data must be a file of the bundle whose sha256 was checked."""
        if location is None:
            raise self.fail(f"tensor {name!r} is external data without a location")
        p = PurePosixPath(location)
        if not location or "\\" in location or "\x00" in location or p.is_absolute() \
                or ".." in p.parts:
            raise self.fail(f"tensor {name!r} has external data at {short(location)}, "
                            "outside the bundle")
        rel = (self.model_dir / p).as_posix()
        if rel not in self.listed:
            raise self.fail(f"tensor {name!r} has external data in {rel}, which has no sha256 "
                            "in the manifest")


def check_graph(bundle: Path, rel: str, listed: dict[str, Path], data: memoryview) -> None:
    """Walk the bytes of ONNX file ``rel``; a BundleError on the first thing not allowed."""
    try:
        _GraphCheck(bundle, rel, listed).model(data)
    except _Malformed as e:
        raise fail(bundle, f"{rel} is not a valid ONNX model ({e})") from None
