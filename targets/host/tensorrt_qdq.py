"""Host side: the ``tensorrt-qdq`` graph pass, which makes Brevitas' QCDQ graphs meet
TensorRT's ONNX Q/DQ rules (the rules and their checker: tensorrt_rules.py).

:func:`tensorrt_qdq_pass` rewrites a member graph so that it meets the rules and computes
the same numbers (tests check under ONNX Runtime):

- Clip on constants (the weights' narrow-range clip) is folded into the initializer;
  an INT32 bias DequantizeLinear is folded into a float constant.
- An unsigned activation whose levels fit 0..127 (k <= 7 bits, zero point 0) is the same
  number as a signed int8 with zero point 0: the zero points become int8 0, and the
  integer Clip [lo, hi] moves before the QuantizeLinear as a float Clip [lo*s, hi*s], which
  gives the same integers (rounding is monotone and fixes lo and hi).
- An unsigned 8-bit tensor (levels 0..255: the 8-bit input quantizer, 8-bit activations)
  does not fit int8 with zero point 0. Where every consumer is a convolution with constant
  weights it is re-expressed exactly: q' = q - 128 in int8, computed in float as
  Round(x / s) -> Clip -> Sub 128 (all exact on integers), the convolution's zero padding
  becomes an explicit Pad with the value of q = 0 (q' = -128), and the shift comes back as
  a float per-channel bias 128 * s * sum(W). The convolution still runs in int8. Other
  consumers get the same value in float (Round/Clip/Mul), so that tensor stays float.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgempir.targets.host.onnx_export import ExportError

PASS = "tensorrt-qdq"


# ------------------------------------------------------------------ graph helpers
class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.arrays = {n: numpy_helper.to_array(t) for n, t in self.inits.items()}
        self._uid = 0

    def producers(self):
        return {o: n for n in self.g.node for o in n.output}

    def consumers(self):
        out = collections.defaultdict(list)
        for n in self.g.node:
            for k, i in enumerate(n.input):
                out[i].append((n, k))
        for o in self.g.output:
            out[o.name].append((None, 0))
        return out

    def const(self, name: str):
        return self.arrays.get(name)

    def add_const(self, hint: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self._uid += 1
        name = f"{hint}/trt_const_{self._uid}"
        t = numpy_helper.from_array(np.asarray(array), name)
        self.g.initializer.append(t)
        self.inits[name] = t
        self.arrays[name] = np.asarray(array)
        return name

    def fresh(self, hint: str) -> str:
        self._uid += 1
        return f"{hint}/trt_{self._uid}"

    def cleanup(self):
        """Drop initializers nothing uses any more."""
        used = {i for n in self.g.node for i in n.input} | {o.name for o in self.g.output}
        keep = [t for t in self.g.initializer if t.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)
        self.inits = {t.name: t for t in keep}
        self.arrays = {k: v for k, v in self.arrays.items() if k in self.inits}

    def toposort(self):
        ready = {i.name for i in self.g.input} | set(self.inits) | {""}
        nodes, out = list(self.g.node), []
        while nodes:
            rest = []
            for n in nodes:
                if all(i in ready for i in n.input):
                    out.append(n)
                    ready.update(n.output)
                else:
                    rest.append(n)
            if len(rest) == len(nodes):
                raise ExportError(f"graph has a cycle or a dangling input at {rest[0].name}")
            nodes = rest
        del self.g.node[:]
        self.g.node.extend(out)


# ------------------------------------------------------------------ the pass
@dataclass
class PassReport:
    folded_constant_clips: int = 0
    folded_int32_dequantize: int = 0
    retyped_int8: int = 0
    shifted_uint8: list = field(default_factory=list)     # tensors re-expressed q - 128
    float_tensors: list = field(default_factory=list)     # tensors kept float (fake quant)

    def to_json(self) -> dict:
        return {"pass": PASS, "folded_constant_clips": self.folded_constant_clips,
                "folded_int32_dequantize": self.folded_int32_dequantize,
                "retyped_int8": self.retyped_int8, "shifted_uint8": self.shifted_uint8,
                "float_tensors": self.float_tensors}


def _fold_constants(G: _Graph, rep: PassReport) -> None:
    """Clip on constants -> constant; DequantizeLinear of an INT32 constant -> float constant."""
    keep = []
    for n in G.g.node:
        if n.op_type == "Clip" and all((not i) or G.const(i) is not None for i in n.input):
            x = G.const(n.input[0])
            lo = G.const(n.input[1]) if len(n.input) > 1 and n.input[1] else None
            hi = G.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            y = np.clip(x, lo if lo is not None else x.min(), hi if hi is not None else x.max())
            _replace_with_const(G, n.output[0], y.astype(x.dtype))
            rep.folded_constant_clips += 1
            continue
        if n.op_type == "DequantizeLinear" and G.const(n.input[0]) is not None and \
                G.const(n.input[0]).dtype == np.int32:
            x = G.const(n.input[0]).astype(np.float64)
            s = G.const(n.input[1]).astype(np.float64)
            zp = G.const(n.input[2]).astype(np.float64) if len(n.input) > 2 and n.input[2] \
                else 0.0
            axis = _attr(n, "axis", 1)
            if np.ndim(s) == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                s, zp = s.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
            _replace_with_const(G, n.output[0], ((x - zp) * s).astype(np.float32))
            rep.folded_int32_dequantize += 1
            continue
        keep.append(n)
    del G.g.node[:]
    G.g.node.extend(keep)


def _replace_with_const(G: _Graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    t = numpy_helper.from_array(value, name)
    G.g.initializer.append(t)
    G.inits[name] = t
    G.arrays[name] = value


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(G: _Graph, name: str):
    v = G.const(name)
    return None if v is None or v.size != 1 else v.reshape(()).item()


def _dq_weight(G: _Graph, prod: dict, name: str):
    """Float weights of a conv from its constant DequantizeLinear, or None."""
    n = prod.get(name)
    if n is None:
        w = G.const(name)
        return None if w is None else w.astype(np.float64)
    if n.op_type != "DequantizeLinear" or G.const(n.input[0]) is None:
        return None
    q = G.const(n.input[0]).astype(np.float64)
    s = G.const(n.input[1]).astype(np.float64)
    zp = G.const(n.input[2]).astype(np.float64) if len(n.input) > 2 and n.input[2] else 0.0
    if np.ndim(s) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[_attr(n, "axis", 1)] = -1
        s = s.reshape(shape)
        zp = np.reshape(zp, shape) if np.ndim(zp) else zp
    return (q - zp) * s


def tensorrt_qdq_pass(model, what: str = "graph"):
    """Return (new model, PassReport); ``model`` is not modified."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _unique_names(model.graph)
    G = _Graph(model)
    rep = PassReport()
    _fold_constants(G, rep)
    rewrite = _QdqRewrite(G, rep, what)
    for q in list(G.g.node):
        if q.op_type == "QuantizeLinear" and q.name not in rewrite.removed:
            rewrite.quantize(q)
    rewrite.rebuild()
    onnx.checker.check_model(model)
    return model, rep


class _QdqRewrite:
    """One pass over a graph's uint8 QuantizeLinear nodes (module docstring: what and why).

    New nodes are collected with the node they serve (``anchor``) and inserted right before
    it by :meth:`rebuild`; replaced nodes are named in ``removed``."""

    def __init__(self, G: _Graph, rep: PassReport, what: str):
        self.G, self.rep, self.what = G, rep, what
        self.zero_i8: str | None = None
        self.new_nodes: list = []        # (anchor node, new node)
        self.removed: set[str] = set()
        self.prod = G.producers()
        self.cons = G.consumers()

    def quantize(self, q) -> None:
        G, what = self.G, self.what
        zp_name = q.input[2] if len(q.input) > 2 and q.input[2] else None
        zp = G.const(zp_name) if zp_name else np.array(0, dtype=np.uint8)
        if zp is None or zp.dtype != np.uint8:
            return  # already signed (or not ours): the checker judges it
        if np.any(zp != 0):
            raise ExportError(f"{what}: {q.name} quantizes to uint8 with zero point "
                              f"{int(np.max(zp))}; TensorRT needs zero point 0 and edgempir "
                              "cannot re-express it")
        s = _scalar(G, q.input[1])
        if s is None:
            raise ExportError(f"{what}: {q.name} has a per-channel activation scale; the jetson "
                              "pass handles per-tensor activation scales only")
        clip, lo, hi, dqs = self.chain(q)
        if self.zero_i8 is None:
            self.zero_i8 = G.add_const("trt", np.array(0, dtype=np.int8))
        if hi <= 127:
            self.retype_int8(q, clip, lo, hi, s, dqs)
        else:
            self.shift_uint8(q, clip, lo, hi, s, dqs)

    def chain(self, q) -> tuple[Any, int, int, list]:
        """QuantizeLinear -> [Clip lo..hi on integers] -> DequantizeLinear(s): the Clip (or
        None), its bounds within 0..255 and the DequantizeLinear nodes."""
        G, cons = self.G, self.cons
        chain = cons[q.output[0]]
        clip = None
        lo, hi = 0, 255
        if len(chain) == 1 and chain[0][0] is not None and chain[0][0].op_type == "Clip":
            clip = chain[0][0]
            lo = int(_scalar(G, clip.input[1])) if len(clip.input) > 1 and clip.input[1] else 0
            hi = int(_scalar(G, clip.input[2])) if len(clip.input) > 2 and clip.input[2] else 255
            lo, hi = max(lo, 0), min(hi, 255)
            chain = cons[clip.output[0]]
        if not chain or any(c is None or c.op_type != "DequantizeLinear" for c, _ in chain):
            raise ExportError(f"{self.what}: {q.name} does not feed DequantizeLinear only; the "
                              "jetson pass cannot rewrite it")
        return clip, lo, hi, [c for c, _ in chain]

    def retype_int8(self, q, clip, lo: int, hi: int, s: float, dqs: list) -> None:
        """Levels within 0..127: the same integers in int8; retype the zero points and move
        the Clip onto floats before the QuantizeLinear."""
        from onnx import helper

        G, base = self.G, q.name or q.output[0]
        if clip is not None or lo > 0:
            lo_f = G.add_const(base, np.array(lo * s, dtype=np.float32))
            hi_f = G.add_const(base, np.array(hi * s, dtype=np.float32))
            xc = G.fresh(base + "/clipped")
            self.new_nodes.append((q, helper.make_node("Clip", [q.input[0], lo_f, hi_f], [xc],
                                                       name=base + "/float_clip")))
            q.input[0] = xc
        _set_zp(q, self.zero_i8)
        for dq in dqs:
            dq.input[0] = q.output[0]
            _set_zp(dq, self.zero_i8)
        if clip is not None:
            self.removed.add(clip.name)
        self.rep.retyped_int8 += 1

    def shift_uint8(self, q, clip, lo: int, hi: int, s: float, dqs: list) -> None:
        """Levels beyond 127: the levels computed in float, then re-expressed q - 128 in
        int8 where the consumers are convolutions, kept float for the others."""
        from onnx import helper

        G, base = self.G, q.name or q.output[0]
        self.removed.add(q.name)
        if clip is not None:
            self.removed.add(clip.name)
        s_name = G.add_const(base, np.array(s, dtype=np.float32))
        r = G.fresh(base + "/levels")
        ops = [
            helper.make_node("Div", [q.input[0], s_name], [r + "_div"], name=base + "/div_scale"),
            helper.make_node("Round", [r + "_div"], [r + "_round"], name=base + "/round"),
            helper.make_node("Clip", [r + "_round", G.add_const(base, np.array(lo, np.float32)),
                                      G.add_const(base, np.array(hi, np.float32))], [r],
                             name=base + "/clip_levels"),
        ]
        for dq in dqs:
            self.removed.add(dq.name)
            v = dq.output[0]
            users = self.cons[v]
            convs = [(c, k) for c, k in users if c is not None and c.op_type == "Conv" and k == 0
                     and _dq_weight(G, self.prod, c.input[1]) is not None
                     and _attr(c, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")]
            others = [(c, k) for c, k in users if (c, k) not in convs]
            if convs:
                ops += self.shifted_convs(base, r, s, s_name, [c for c, _ in convs])
                self.rep.shifted_uint8.append(v)
            if others:
                ops += self.float_value(base, r, s_name, v, others)
                self.rep.float_tensors.append(v)
        self.new_nodes.extend((q, op) for op in ops)

    def shifted_convs(self, base: str, r: str, s: float, s_name: str, convs: list) -> list:
        """q' = q - 128 in float, then per convolution: explicit padding with q = 0's value,
        an int8 Q/DQ pair, and the shift back as a per-channel bias 128 * s * sum(W)."""
        from onnx import helper

        G = self.G
        shifted = G.fresh(base + "/shifted")
        ops = [helper.make_node("Sub", [r, G.add_const(base, np.array(128, np.float32))],
                                [shifted + "_lv"], name=base + "/shift_levels"),
               helper.make_node("Mul", [shifted + "_lv", s_name], [shifted],
                                name=base + "/shift_rescale")]
        for conv in convs:
            src = shifted
            pads = list(_attr(conv, "pads", []) or [])
            if any(pads):
                half = len(pads) // 2
                full = [0, 0] + pads[:half] + [0, 0] + pads[half:]
                src = G.fresh(conv.name + "/padded")
                ops.append(helper.make_node(
                    "Pad", [shifted, G.add_const(conv.name, np.array(full, np.int64)),
                            G.add_const(conv.name, np.array(-128 * s, np.float32))],
                    [src], mode="constant", name=conv.name + "/explicit_pad"))
                _set_attr(conv, "pads", [0] * len(pads))
            qo = G.fresh(conv.name + "/q_int8")
            dqo = G.fresh(conv.name + "/dq_int8")
            ops.append(helper.make_node("QuantizeLinear", [src, s_name, self.zero_i8], [qo],
                                        name=conv.name + "/quantize_int8"))
            ops.append(helper.make_node("DequantizeLinear", [qo, s_name, self.zero_i8], [dqo],
                                        name=conv.name + "/dequantize_int8"))
            conv.input[0] = dqo
            self.shift_bias(conv, s)
        return ops

    def shift_bias(self, conv, s: float) -> None:
        """The conv's bias plus 128 * s * sum(W) per output channel (the shift, undone)."""
        G = self.G
        w = _dq_weight(G, self.prod, conv.input[1])
        corr = 128.0 * s * w.reshape(w.shape[0], -1).sum(axis=1)
        if len(conv.input) > 2 and conv.input[2]:
            b = G.const(conv.input[2])
            if b is None:
                raise ExportError(f"{self.what}: {conv.name} has a non-constant bias")
            corr = corr + b.astype(np.float64)
            conv.input[2] = G.add_const(conv.name, corr.astype(np.float32))
        else:
            conv.input.append(G.add_const(conv.name, corr.astype(np.float32)))

    def float_value(self, base: str, r: str, s_name: str, v: str, others: list) -> list:
        """Consumers other than convolutions get the same value in float."""
        from onnx import helper

        fv = self.G.fresh(base + "/float_value")
        for c, k in others:
            if c is None:  # a graph output
                raise ExportError(f"{self.what}: {v} is a graph output; cannot rewrite it")
            c.input[k] = fv
        return [helper.make_node("Mul", [r, s_name], [fv], name=base + "/to_float")]

    def rebuild(self) -> None:
        """New nodes right before the node they serve, replaced ones dropped; then sort."""
        G = self.G
        nodes = []
        extra = collections.defaultdict(list)
        for anchor, op in self.new_nodes:
            extra[anchor.name].append(op)
        for n in G.g.node:
            nodes.extend(extra.get(n.name, []))
            if n.name not in self.removed:
                nodes.append(n)
        del G.g.node[:]
        G.g.node.extend(nodes)
        G.toposort()
        G.cleanup()


def _unique_names(graph) -> None:
    seen = set()
    for i, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        n.name = name
        seen.add(name)


def _set_zp(node, zp_name: str) -> None:
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = zp_name


def _set_attr(node, name: str, value) -> None:
    from onnx import helper

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))
