"""Host side: Brevitas QCDQ export of each member, graph checks, and numeric validation.

Why the TorchScript path (``dynamo=False``) with ``keep_initializers_as_inputs=False``:
the dynamo exporter and Brevitas' own default keep the weights as graph inputs, which ONNX
Runtime must treat as overridable, so it neither constant-folds them nor fuses the
QuantizeLinear -> DequantizeLinear -> Conv pattern into QLinearConv. With weights as
initializers the low-bit convolutions become integer kernels; :func:`kernel_counts` reads
ONNX Runtime's optimised graph to prove it for every export.

Brevitas' exporter runs two onnxoptimizer passes (extract_constant_to_initializer,
eliminate_unused_initializer), so onnxoptimizer is a dependency of the host side.
"""
from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import numpy as np

from edgempir.contract import INPUT_NAME, MEMBER_OUTPUT
from edgempir.errors import EdgempirError

INTEGER_OPS = ("QLinearConv", "QGemm", "MatMulInteger", "QLinearMatMul", "ConvInteger")


class ExportError(EdgempirError):
    """An export that does not meet its checks (graph rules, kernels, validation)."""


# ------------------------------------------------------------------ Brevitas export
def export_member(model, path: str | os.PathLike, input_shape, opset: int = 13):
    """Export one member (eval mode) to ``path``; returns the loaded ModelProto."""
    import onnx
    import torch
    from brevitas.export import export_onnx_qcdq

    model = model.eval()
    example = torch.rand(2, *input_shape)
    is_quant = any(type(m).__module__.startswith("brevitas") for m in model.modules())
    kwargs = {"args": example, "export_path": str(path), "opset_version": opset,
              "input_names": [INPUT_NAME], "output_names": [MEMBER_OUTPUT],
              "dynamic_axes": {INPUT_NAME: {0: "batch"}, MEMBER_OUTPUT: {0: "batch"}},
              "keep_initializers_as_inputs": False, "do_constant_folding": True}
    with torch.no_grad():
        if is_quant:
            try:
                export_onnx_qcdq(model, dynamo=False, **kwargs)
            except AssertionError as e:  # Brevitas' QCDQ handlers assert bit_width > 1
                if "Binary quant" not in str(e):
                    raise
                raise ExportError(f"{path}: Brevitas' ONNX export does not support 1-bit "
                                  "(binary) quantizers; train the member with 2 bits or "
                                  "more") from None
        else:
            # plain torch layers: the same TorchScript exporter, without Brevitas handlers
            kwargs.pop("export_path")
            torch.onnx.export(model, kwargs.pop("args"), str(path), dynamo=False, **kwargs)
    proto = onnx.load(str(path))
    if is_quant:
        # preset paper: the last quantized conv feeds the float classifier unquantized
        from edgempir.targets.host.conv_integer import convert_float_output_convs

        if convert_float_output_convs(proto):
            onnx.save(proto, str(path))
    check_member_graph(proto, str(path))
    return proto


def check_member_graph(proto, name: str) -> None:
    """Weights are initializers, BatchNorm is folded, one input named ``input``."""
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME]:
        extra = [i for i in inputs if i != INPUT_NAME]
        raise ExportError(f"{name}: graph inputs are {inputs}; weights must be initializers, "
                          f"not inputs ({', '.join(extra[:3])}...)")
    bn = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if bn:
        raise ExportError(f"{name}: BatchNormalization {bn[0]} was not folded into its "
                          "convolution; it would block the integer kernels")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if not dims or dims[0].dim_param == "":
        raise ExportError(f"{name}: the batch dimension of {INPUT_NAME!r} is not dynamic")


# ------------------------------------------------------------------ packed weights
def packable_weights(proto) -> list[str]:
    """Names of the int8 initializers that hold a quantized layer's integer weights.

    Brevitas' QCDQ graph feeds them to a DequantizeLinear as its input 0, directly or through
    the narrow-range Clip (int8 -> Clip -> DequantizeLinear -> Conv/Gemm/MatMul). Scales,
    zero points and clip bounds (other inputs, or scalars) are left where they are.
    """
    from onnx import TensorProto

    consumers = collections.defaultdict(list)
    for n in proto.graph.node:
        for k, name in enumerate(n.input):
            consumers[name].append((n, k))

    def feeds_dq_data(name: str, depth: int = 0) -> bool:
        uses = consumers.get(name, [])
        if not uses:
            return False
        for n, k in uses:
            if n.op_type == "DequantizeLinear" and k == 0:
                continue
            if n.op_type == "Clip" and k == 0 and depth == 0 and \
                    feeds_dq_data(n.output[0], depth + 1):
                continue
            return False
        return True

    return [t.name for t in proto.graph.initializer
            if t.data_type == TensorProto.INT8 and len(t.dims) >= 2
            and t.data_location != TensorProto.EXTERNAL and feeds_dq_data(t.name)]


def integer_weight_bits(proto) -> int:
    """The fewest signed bits that hold every packable integer weight of ``proto`` (1 if none)."""
    from onnx import numpy_helper

    from edgempir.targets.host.pack import fits

    inits = {t.name: t for t in proto.graph.initializer}
    bits = 1
    for name in packable_weights(proto):
        a = numpy_helper.to_array(inits[name])
        while not fits(a, bits):
            bits += 1
    return bits


def pack_weights(proto, bits: int) -> tuple[bytes, list[dict]]:
    """Pack ``proto``'s low-bit integer weights (:func:`packable_weights`) at ``bits`` bits.

    Returns the packed bytes and one table row per tensor (name, bits, shape, dtype, offset,
    nbytes) in the layout of :mod:`edgempir.targets.device.packing`. ``proto`` is not changed;
    :func:`make_external` then moves the tensors out of it. Raises ExportError when a
    weight does not fit ``bits`` signed bits (the export would lose information).
    """
    from onnx import numpy_helper

    from edgempir.targets.host.pack import fits, pack

    inits = {t.name: t for t in proto.graph.initializer}
    blob, rows, offset = [], [], 0
    for name in packable_weights(proto):
        a = numpy_helper.to_array(inits[name])
        if not fits(a, bits):
            raise ExportError(f"weight {name} holds values {int(a.min())}..{int(a.max())}, "
                              f"outside {bits}-bit signed range; cannot pack it")
        data = pack(a, bits)
        rows.append({"name": name, "bits": int(bits), "shape": [int(d) for d in a.shape],
                     "dtype": "int8", "offset": offset, "nbytes": int(data.size)})
        blob.append(data.tobytes())
        offset += int(data.size)
    return b"".join(blob), rows


def make_external(proto, rows: list[dict], location: str, prefix: str = "") -> int:
    """Mark the initializers ``prefix + row['name']`` of ``proto`` as external data in the
    packed file ``location`` (relative to the ONNX file) and drop their bytes from the proto.

    The ``offset``/``length`` keys point at the packed bytes; they are not raw int8 data,
    so the packed file is only meaningful through edgempir's loader (or
    :func:`materialize`). Returns the number of int8 bytes removed from the proto.
    """
    from onnx import TensorProto, numpy_helper

    by_name = {prefix + r["name"]: r for r in rows}
    removed = 0
    for t in proto.graph.initializer:
        r = by_name.pop(t.name, None)
        if r is None:
            continue
        removed += numpy_helper.to_array(t).nbytes
        for f in ("raw_data", "int32_data"):
            t.ClearField(f)
        del t.external_data[:]
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(r["offset"])),
                           ("length", str(r["nbytes"]))):
            e = t.external_data.add()
            e.key, e.value = key, value
    if by_name:
        raise ExportError(f"cannot mark {min(by_name)} external: no such initializer")
    return removed


def inline_bytes(proto) -> int:
    """Bytes of the initializers stored inside ``proto`` (external ones not counted)."""
    from onnx import TensorProto, numpy_helper

    return int(sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer
                   if t.data_location != TensorProto.EXTERNAL))


def materialize(proto, externals: dict) -> None:
    """Put unpacked arrays (name -> int8) back into ``proto`` as ordinary initializers, e.g.
    to hand a packed bundle's graph to a tool that does not know packed storage."""
    from onnx import TensorProto, numpy_helper

    for t in proto.graph.initializer:
        if t.name in externals:
            t.CopyFrom(numpy_helper.from_array(externals[t.name], t.name))
    left = [t.name for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if left:
        raise ExportError(f"{left[0]} is external data that was not supplied")


# ------------------------------------------------------------------ kernels ORT runs
def optimized_graph(onnx_path: str | os.PathLike, ort_profile: dict | None = None,
                    external_initializers: dict | None = None):
    """The graph ONNX Runtime runs after its optimisations, as a ModelProto.

    ``external_initializers`` (name -> array) are the packed weights unpacked; None finds
    them when the file is inside a bundle with packed storage.
    """
    import onnx

    from edgempir.targets.device.onnxruntime import write_optimized_graph

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        write_optimized_graph(onnx_path, out, ort_profile,
                              external_initializers=external_initializers)
        return onnx.load(str(out))


def kernel_counts(onnx_path: str | os.PathLike, ort_profile: dict | None = None,
                  external_initializers: dict | None = None) -> dict:
    """Op type -> count in ONNX Runtime's optimised graph."""
    proto = optimized_graph(onnx_path, ort_profile, external_initializers)
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items()))


def expected_layers(model) -> dict:
    """How many quantized conv/linear layers a member has, and how many float ones."""
    from torch import nn

    from edgempir.models.census import is_quantized_layer

    q = f_conv = f_lin = 0
    for m in model.modules():
        if is_quantized_layer(m):
            q += 1
        elif isinstance(m, nn.Conv2d):
            f_conv += 1
        elif isinstance(m, nn.Linear):
            f_lin += 1
    return {"quantized": q, "float_conv": f_conv, "float_linear": f_lin}


def check_integer_kernels(counts: dict, layers: dict, integer_ops, name: str) -> None:
    """A quantized member's conv/linear layers must all run as integer kernels."""
    if not layers["quantized"] or not integer_ops:
        return
    n_int = sum(counts.get(op, 0) for op in integer_ops)
    float_conv = counts.get("Conv", 0) + counts.get("FusedConv", 0) + counts.get("NchwcConv", 0)
    if float_conv:
        raise ExportError(f"{name}: ONNX Runtime runs {float_conv} float Conv in this quantized "
                          "member (something sits between its quantizers and the convolution); "
                          "export refuses it")
    if n_int < layers["quantized"]:
        raise ExportError(f"{name}: only {n_int} of {layers['quantized']} quantized conv/linear "
                          f"layers run as integer kernels ({', '.join(integer_ops)}) in ONNX "
                          "Runtime's optimised graph")


# ------------------------------------------------------------------ validation
def torch_member_logits(models, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """[M, N, C] logits of the PyTorch members on float inputs in [0, 1]."""
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size], dtype=np.float32))
            outs.append(torch.stack([m(xb) for m in models]).numpy())
    return np.concatenate(outs, axis=1)


def agreement_report(ref_logits: np.ndarray, ort_logits: np.ndarray, ref_ids: np.ndarray,
                     ort_ids: np.ndarray, labels: np.ndarray | None = None,
                     ran: np.ndarray | None = None) -> dict:
    """Per-member and ensemble top-1 agreement and max |logit difference|.

    ``ran`` [M, B] (an early-exit graph's member_ran): a member is compared only on the rows
    it ran on (its other rows are NaN); ``n_ran`` says how many.
    """
    members = []
    for i in range(ref_logits.shape[0]):
        rows = ran[i] if ran is not None else np.ones(ref_logits.shape[1], dtype=bool)
        r, o = ref_logits[i][rows], ort_logits[i][rows]
        members.append({
            "index": i,
            "agreement": float((r.argmax(1) == o.argmax(1)).mean()) if rows.any() else 1.0,
            "max_logit_diff": float(np.abs(r - o).max()) if rows.any() else 0.0,
            "n_ran": int(rows.sum()),
        })
    report = {"n": int(ref_logits.shape[1]), "members": members,
              "ensemble": {"agreement": float((ref_ids == ort_ids).mean())}}
    if labels is not None:
        report["ensemble"]["accuracy_torch"] = float((ref_ids == labels).mean())
        report["ensemble"]["accuracy_onnx"] = float((ort_ids == labels).mean())
    return report


def check_agreement(report: dict, floor: float, what: str) -> None:
    worst = [(m["agreement"], f"member {m['index']}") for m in report["members"]]
    worst.append((report["ensemble"]["agreement"], "the ensemble"))
    agreement, who = min(worst)
    if agreement < floor:
        diff = max(m["max_logit_diff"] for m in report["members"])
        raise ExportError(f"validation failed on {what}: ONNX Runtime agrees with PyTorch on "
                          f"{agreement:.2%} of top-1 decisions for {who} (needs >= {floor:.1%}, "
                          f"max logit difference {diff:.3g}); the export is not what was "
                          "evaluated, nothing was written")
