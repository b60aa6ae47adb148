"""Compute accounting: inference MACs, bit-operations and weight bytes per member from a real
forward, training passes and MACs from the manifest, and the compute of what a row scores."""
from __future__ import annotations

import math
from pathlib import Path

from edgempir.experiment.layout import is_trained, run_dir


def member_compute(member, spec, input_shape) -> dict:
    """Inference cost of one member for one image, measured by hooks on a real forward.

    MACs: conv/linear multiply-accumulates. Bit-operations (BOPs): MACs x weight bits x
    input-activation bits per layer (a float layer or float input counts 32 bits), the
    usual measure of low-bit compute. Weight bytes: quantized weights at their bit width
    (packed) and as int8 containers (what export stores today), float weights at 4 bytes;
    quantizer scales are not counted (as in ``export``'s weight_bytes)."""
    import torch
    from torch import nn

    from edgempir.models.census import is_quantized_layer

    layers: list[dict] = []

    def hook(mod, inputs, output):
        x = inputs[0]
        a_bits = int(x.bit_width) if getattr(x, "bit_width", None) is not None else 32
        per_out = (mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                   if isinstance(mod, nn.Conv2d) else mod.in_features)
        macs = int(getattr(output, "value", output)[0].numel()) * per_out
        quant = is_quantized_layer(mod) and not spec.is_float
        w_bits = spec.weight_bits if quant else 32
        layers.append({"macs": macs, "weight_bits": w_bits, "act_bits": a_bits,
                       "weights": int(mod.weight.numel()), "quantized": quant})

    mods = [m for m in member.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad():
            member.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    quant_w = sum(lay["weights"] for lay in layers if lay["quantized"])
    float_w = sum(lay["weights"] for lay in layers if not lay["quantized"])
    bits = spec.weight_bits or 32
    return {"spec": spec.name, "macs": sum(lay["macs"] for lay in layers),
            "bit_ops": sum(lay["macs"] * lay["weight_bits"] * lay["act_bits"] for lay in layers),
            "weights": quant_w + float_w,
            "weight_bytes": {"packed": -(-quant_w * bits // 8) + 4 * float_w,
                             "int8": quant_w + 4 * float_w, "float32": 4 * (quant_w + float_w)}}


def training_compute(manifest: dict, member_macs: list[int]) -> list[dict]:
    """Training cost per member from its manifest: forward/backward passes over a batch and
    an estimate of the MACs (backward ~ 2 forward; PGD training makes ``steps`` attack
    passes and one update pass per batch, plus one clean forward for the accuracy log)."""
    tr = manifest["training"]
    adv = tr.get("adversarial")
    n_train = manifest["dataset"]["n_train"]
    batches = math.ceil(n_train / tr["batch_size"]) * tr["epochs"]
    passes_per_batch = (adv["steps"] + 1) if adv else 1
    out = []
    for m, macs in zip(manifest["members"], member_macs):
        fwd_per_image = 3 * passes_per_batch + (1 if adv else 0)
        out.append({"spec": m["spec"], "epochs": tr["epochs"], "batches": batches,
                    "passes": batches * passes_per_batch,
                    "macs": macs * n_train * tr["epochs"] * fwd_per_image,
                    "seconds": round(sum(m.get("time_per_epoch_s") or []), 1)})
    return out


def model_summary(out: Path, model: str) -> dict | None:
    """Compute, memory and training of one trained model (None if not trained yet)."""
    run = run_dir(out, model)
    if not is_trained(run):
        return None
    from edgempir.rundir import load_run

    ens = load_run(run)
    manifest = ens.manifest
    shape = tuple(manifest["dataset"]["input_shape"])
    members = [member_compute(m, s, shape) for m, s in zip(ens.members, ens.specs)]
    training = training_compute(manifest, [m["macs"] for m in members])
    tr = manifest["training"]
    return {"run": str(run), "members": members, "training": training,
            "training_settings": {k: tr[k] for k in ("epochs", "batch_size", "lr", "augment",
                                                     "adversarial")},
            "clean_accuracy_full_test": manifest["metrics"]["clean_accuracy"],
            "n_test": manifest["metrics"]["n_test"], "seed": manifest["seed"],
            "versions": manifest.get("versions")}


def row_compute(row: dict, models: dict) -> dict | None:
    """The compute of what a row scores: one member, or every member of the ensemble."""
    summary = models.get(row["model"])
    if summary is None:
        return None
    idx = [row["member"]] if row["member"] is not None else range(len(summary["members"]))
    mem = [summary["members"][i] for i in idx]
    tr = [summary["training"][i] for i in idx]
    return {"macs": sum(m["macs"] for m in mem), "bit_ops": sum(m["bit_ops"] for m in mem),
            "weight_bytes": {k: sum(m["weight_bytes"][k] for m in mem)
                             for k in ("packed", "int8", "float32")},
            "train_passes": sum(t["passes"] for t in tr),
            "train_macs": sum(t["macs"] for t in tr),
            "train_seconds": round(sum(t["seconds"] for t in tr), 1)}
