"""The bundle manifest as export writes it: member entries, weight bytes, vote execution
(host side; the format and its reader are :mod:`edgempir.targets.device.bundle`,
docs/BUNDLE.md has every field)."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from edgempir import contract as C
from edgempir import provenance
from edgempir.targets.device import bundle as B

if TYPE_CHECKING:
    from edgempir.targets.host.export import Work

REJECT_RULES = {
    "majority": "every vote accepted (accepted is always true)",
    "unanimous": "the vote is accepted only when every member's argmax is the same class",
}


def weight_bytes(model, spec, proto, packed_rows: list | None = None) -> dict:
    """Weight memory of a member: at its real bit width, as stored in the bundle, and as
    float32.

    ``stored``: the initializers left inside the member's ONNX file plus its packed file
    (``packed_rows``: the tensors moved there); ``int8_initializers``: what the same
    member takes with every low-bit weight as an int8 initializer (the storage before
    packing, and the jetson bundle's).
    """
    from torch import nn

    from edgempir.models.census import is_quantized_layer
    from edgempir.targets.host.onnx_export import inline_bytes

    quant = float_n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            if is_quantized_layer(m) and not spec.is_float:
                quant += m.weight.numel()
                float_n += m.bias.numel() if m.bias is not None else 0
            else:
                float_n += n
    params = quant + float_n
    bits = spec.weight_bits or 32
    rows = packed_rows or []
    inline = inline_bytes(proto)
    packed = sum(r["nbytes"] for r in rows)
    unpacked = sum(math.prod(r["shape"]) for r in rows)
    if spec.is_float:
        storage = "float32"
    elif rows:
        storage = f"packed-int{rows[0]['bits']}"
    else:
        storage = "int8-initializers"
    return {"parameters": int(params), "quantized_parameters": int(quant),
            "true_bits": int(-(-quant * bits // 8) + 4 * float_n), "stored": int(inline + packed),
            "int8_initializers": int(inline + unpacked),
            "float32": int(4 * params), "storage": storage}


def member_entry(w: Work, i: int, layers: dict, counts: dict) -> dict:
    """members[i] of the manifest, once member i's file is saved and its kernels counted."""
    from edgempir.targets.host.onnx_export import INTEGER_OPS

    spec, run_member = w.specs[i], w.run_manifest["members"][i]
    return {
        "index": i, **spec.to_json(), "file": B.member_relpath(i, spec.name),
        "parameters": run_member.get("parameters"),
        "weight_bytes": weight_bytes(w.ens.members[i], spec, w.protos[i], w.packed_rows[i]),
        "layers": layers, "optimized_ops": counts,
        "integer_kernels": int(sum(counts.get(op, 0) for op in INTEGER_OPS)),
        "passes": w.pass_reports[i],
        "host_clean_accuracy_run": run_member.get("clean_accuracy"),
    }


def vote_execution(mode: str, order: list[int], reference: int) -> dict:
    """The manifest's account of how ensemble.onnx runs the vote (docs/BUNDLE.md)."""
    from edgempir.vote import always_open

    if mode == C.VOTE_FULL:
        how = "every member runs on every row"
    else:
        how = ("members run in 'order' (cheapest first, the reference last); each member after "
               "the first always_open runs only on the rows where its vote can still change "
               "the decision; the decisions equal the full vote's")
    return {"mode": mode, "order": list(order), "reference_member": int(reference),
            "always_open": always_open(len(order)) if mode != C.VOTE_FULL else len(order),
            "how": how}


_OUTPUTS = {"ensemble": {C.CLASS_IDS: "int64 [batch]",
                         C.MEMBER_LOGITS: "float32 [members, batch, classes]; "
                                          "NaN rows where a member did not run",
                         C.MEMBER_RAN: "bool [members, batch]",
                         C.ACCEPTED: "bool [batch]"},
            "member": {C.MEMBER_OUTPUT: "float32 [batch, classes]"}}


def bundle_manifest(w: Work) -> dict:
    """manifest.json without ``files`` (B.write_manifest adds them) and with
    ``export_seconds`` still null."""
    from edgempir.fsutil import sha256_file

    ds, run = w.dataset, w.run.resolve()
    return {
        "schema": B.BUNDLE_SCHEMA, "schema_version": B.SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": w.profile["name"], "runtime": w.profile["runtime"], "profile": w.profile,
        "input": {"name": C.INPUT_NAME, "shape": list(w.input_shape), "dtype": "float32",
                  "range": [0.0, 1.0], "batch": "dynamic", "layout": "NCHW"},
        "outputs": _OUTPUTS,
        "dataset": ds["name"], "num_classes": int(ds["num_classes"]),
        "class_names": list(ds["class_names"]),
        "arch": w.run_manifest["arch"], "combiner": "vote",
        "vote": "strict majority of member argmaxes, else the reference member's argmax",
        "vote_execution": vote_execution(w.vote_mode, C.cascade_order(w.specs),
                                         w.ens.reference),
        "reference_member": int(w.ens.reference),
        "fp32_member": next((i for i, s in enumerate(w.specs) if s.is_float), None),
        "ensemble_file": B.ENSEMBLE_FILE, "ensemble_optimized_ops": w.ens_counts,
        "weight_storage": w.storage,
        "members": w.members, "calib": w.calib,
        "host_accuracy": w.host_accuracy,
        "reject_policy": {"name": w.reject_policy, "rule": REJECT_RULES[w.reject_policy]},
        "host_rejection": w.host_rejection,
        "host_accuracy_how": "PyTorch ensemble (vote) on exactly calib/clean.npz and "
                             "calib/adv-adaptive.npz, measured by export",
        "eval_info": w.eval_info, "validation": w.validation,
        "source_run": {"path": str(run), "name": run.name,
                       "manifest_sha256": sha256_file(w.run / "manifest.json"),
                       "seed": w.run_manifest.get("seed"), "data": w.data_record},
        "versions": provenance.versions("torch", "brevitas", "onnx", "onnxruntime", "numpy"),
        "export_seconds": None,
    }
