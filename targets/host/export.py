"""``edgempir export``: a run directory (trained and evaluated) -> a bundle for one target.

Steps, all inside ``OUT.tmp-<pid>`` (renamed onto OUT only when every check passed, so a
failure or a kill leaves nothing half-written):

1. profile: built-in target or the user's TOML file, checked strictly;
2. sets: calibration (training images), clean (the test images eval attacked) and the
   adversarial examples of eval's adaptive protocol, in calib/;
3. members: Brevitas QCDQ export, the profile's graph passes, the profile's graph rules,
   and the ONNX Runtime kernel check (every quantized conv/linear an integer kernel);
4. ensemble.onnx: the members and the vote in one graph, checked the same way;
   weight storage: for ONNX Runtime targets the 2- and 4-bit integer weights are packed
   into ``members/<i>-<spec>.packed.bin`` and the ONNX files reference them as external
   data (targets/device/packing.py); the kernel check runs on the packed files, weights supplied
   the way the device supplies them;
5. validation: ONNX Runtime against PyTorch on the clean and adversarial sets, per member
   and for the ensemble; top-1 agreement below the floor (0.995) fails the export;
6. manifest.json with the profile, members, weight bytes, host accuracies, validation
   figures, eval provenance and the sha256 of every file.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgempir import contract as C
from edgempir import provenance
from edgempir.errors import EdgempirError, RunDirError
from edgempir.fsutil import show_path
from edgempir.targets.device import bundle as B
from edgempir.targets.host.onnx_export import ExportError
from edgempir.validate import read_json

PROTOCOL = "adaptive"


def default_out(run: Path, target_name: str) -> Path:
    return Path("bundles") / f"{Path(run).resolve().name}-{target_name}"


# ------------------------------------------------------------------ inputs
def find_eval(run: Path, adv: dict) -> dict:
    """The adaptive eval report that produced the adversarial set, as provenance."""
    from edgempir.fsutil import sha256_file

    eval_dir = run / "eval"
    config = str(adv["config"]) if "config" in adv else None
    candidates = [eval_dir / f"{PROTOCOL}-{config}.json"] if config else \
        sorted(eval_dir.glob(f"{PROTOCOL}-*.json"), key=lambda p: p.stat().st_mtime)[::-1]
    for path in candidates:
        if not path.is_file():
            continue
        try:  # bytes capped, depth bounded, NaN refused
            report = read_json(path, error=RunDirError, hint=f"rerun 'edgempir eval {run}'")
        except OSError as e:
            raise RunDirError(f"{show_path(path)} cannot be read ({e.strerror or e}); rerun "
                              f"'edgempir eval {run}'") from None
        if not isinstance(report, dict) or report.get("schema") != "edgempir.eval":
            raise RunDirError(f"{path} is not an edgempir eval report; rerun 'edgempir eval'")
        if report.get("protocol") != PROTOCOL:
            continue
        headline = [{"eps": r.get("eps"), "clean": r.get("clean"),
                     "worst_case": r.get("worst_case")}
                    for r in report.get("results", []) if isinstance(r, dict)]
        return {"protocol": PROTOCOL, "config": report.get("config"),
                "eps": report.get("eps"), "norm": report.get("norm", "Linf"),
                "adv_eps": float(np.asarray(adv["eps"]).reshape(-1)[0]) if "eps" in adv
                else None,
                "n_examples": report.get("n_examples"), "seed": report.get("seed"),
                "report_file": f"eval/{path.name}", "report_sha256": sha256_file(path),
                "adv_sha256": sha256_file(eval_dir / "adv-adaptive.npz"),
                "report": {"results": headline,
                           "worst_case_over": report.get("worst_case_over")}}
    raise RunDirError(f"{run} has eval/adv-adaptive.npz but no {PROTOCOL} eval report "
                      f"(eval/{PROTOCOL}-<config>.json); rerun 'edgempir eval {run}'")


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise EdgempirError(f"output directory {show_path(out)} already exists; pass --force to replace "
                            "it or choose another --out")
    if out.exists() and not out.is_dir():
        raise EdgempirError(f"{show_path(out)} exists and is not a directory; choose another --out")


# ------------------------------------------------------------------ weight bytes
def weight_bytes(model, spec, proto, packed_rows: list | None = None) -> dict:
    """Weight memory of a member: at its real bit width, as stored in the bundle, and as
    float32.

    ``stored``: the initializers left inside the member's ONNX file plus its packed file
    (``packed_rows``: the tensors moved there); ``int8_initializers``: what the same
    member takes with every low-bit weight as an int8 initializer (the storage before
    packing, and the jetson bundle's).
    """
    from torch import nn

    from edgempir.targets.host.onnx_export import inline_bytes

    quant = float_n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            if type(m).__module__.startswith("brevitas") and not spec.is_float:
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


def storage_choice(profile: dict, requested: str | None) -> str:
    """``packed`` or ``int8``: packed for ONNX Runtime targets, int8 for TensorRT."""
    if requested is None:
        return "packed" if profile["runtime"] == "onnxruntime" else "int8"
    if requested not in ("packed", "int8"):
        raise EdgempirError(f"weight storage {requested!r} is unknown; use 'packed' or 'int8'")
    if requested == "packed" and profile["runtime"] != "onnxruntime":
        raise EdgempirError(f"target {profile['name']} runs {profile['runtime']}, which builds "
                            "from the ONNX file alone: packed weight storage is for ONNX "
                            "Runtime targets; use int8")
    return requested


def pack_bundle_weights(tmp: Path, protos: list, ens_proto, specs) -> tuple[dict, list]:
    """Pack every 2/4-bit member's integer weights; mark them external in the member files
    and in the ensemble graph (both protos changed in place).

    Returns the manifest's ``weight_storage`` and, per member, the packed tensor rows.
    """
    from edgempir.fsutil import atomic_write_bytes
    from edgempir.targets.device import packing
    from edgempir.targets.host import onnx_export as OX

    packed_files, graphs, rows_per_member = {}, {B.ENSEMBLE_FILE: []}, []
    for i, (proto, spec) in enumerate(zip(protos, specs)):
        # DoReFa's k-bit weights (preset paper) are the odd integers in [-(2^k-1), 2^k-1]:
        # k + 1 signed bits, so the container follows the stored integers, not the spec
        bits = None if spec.is_float else packing.container_bits(
            max(spec.weight_bits, OX.integer_weight_bits(proto)))
        rows: list = []
        if bits is not None:
            blob, rows = OX.pack_weights(proto, bits)
        rows_per_member.append(rows)
        if not rows:
            continue
        member_rel = B.member_relpath(i, spec.name)
        rel = member_rel[:-len(".onnx")] + packing.PACKED_SUFFIX
        atomic_write_bytes(tmp / rel, blob)
        OX.make_external(proto, rows, Path(rel).name)                 # next to the member
        OX.make_external(ens_proto, rows, rel, prefix=f"m{i}/")      # from the bundle root
        packed_files[rel] = {"member": i, "bytes": len(blob), "tensors": rows}
        graphs[member_rel] = [{"file": rel, "prefix": ""}]
        graphs[B.ENSEMBLE_FILE].append({"file": rel, "prefix": f"m{i}/"})
    if not packed_files:
        return packing.int8_storage("no member has integer weights of 4 bits or fewer"), \
            rows_per_member
    storage = {
        "format": packing.PACKED_FORMAT, "unpacked_at": "load", "layout": packing.LAYOUT,
        "onnx": "the packed tensors are initializers with data_location EXTERNAL (location: "
                "the packed file, offset/length: the packed bytes, not raw int8); the runtime "
                "unpacks them to int8 and passes them with "
                "SessionOptions.add_external_initializers",
        "packed_files": packed_files, "graphs": graphs,
        "bytes": {"packed": sum(e["bytes"] for e in packed_files.values()),
                  "unpacked": sum(math.prod(t["shape"]) for e in packed_files.values()
                                  for t in e["tensors"])},
    }
    return storage, rows_per_member


# ------------------------------------------------------------------ the export
def export_bundle(run: str | Path, target: str, out: str | Path | None = None, *,
                  force: bool = False, data_dir: str | None = None, n_calib: int = 512,
                  seed: int = 0, progress: bool = True,
                  echo: Callable[[str], None] = lambda s: None,
                  perturb: Callable | None = None, weight_storage: str | None = None,
                  reject_policy: str = "majority", allow_other_data: bool = False) -> dict:
    """Export RUN for TARGET into OUT; returns the bundle's manifest.

    ``perturb`` (tests only) is applied to the PyTorch members after export and before
    validation, to prove that a model that does not match its export is rejected.
    ``weight_storage``: ``packed`` (2/4-bit weights packed; the default for ONNX Runtime
    targets) or ``int8`` (int8 initializers in the ONNX files; the default, and the only
    choice, for TensorRT targets).
    ``reject_policy``: the rule of the ensemble graph's ``accepted`` output (``majority``:
    every vote accepted; ``unanimous``: only when every member agrees; docs/BUNDLE.md).
    ``allow_other_data``: build the sets from data whose fingerprint differs from the run's
    (refused otherwise); ``source_run.data`` records which data was used.
    """
    import onnx

    from edgempir import rundir
    from edgempir.calib.build import build_sets, read_adversarial
    from edgempir.data import load_dataset
    from edgempir.fsutil import atomic_dir, sha256_file
    from edgempir.targets.device import packing
    from edgempir.targets.host import graph
    from edgempir.targets.host import onnx_export as OX
    from edgempir.targets.host.profiles import load_profile
    from edgempir.vote import REJECT_POLICIES

    if reject_policy not in REJECT_POLICIES:
        raise ExportError(f"--reject-policy {reject_policy!r} is unknown; choose one of "
                          f"{', '.join(REJECT_POLICIES)}")
    t0 = time.perf_counter()
    profile = load_profile(target)
    storage_kind = storage_choice(profile, weight_storage)
    run = Path(run)
    out = Path(out) if out is not None else default_out(run, profile["name"])
    check_out(out, force)
    manifest = rundir.read_manifest(run)
    if not (run / "eval").is_dir():
        raise RunDirError(f"{run} has not been evaluated (no eval/ folder); run 'edgempir eval "
                          f"{run}' first: the bundle carries its adversarial examples")
    ds = manifest["dataset"]
    input_shape = tuple(ds["input_shape"])
    adv = read_adversarial(run, input_shape, ds["num_classes"])
    eval_info = find_eval(run, adv)
    ens = rundir.load_run(run)
    specs = ens.specs
    data = load_dataset(ds["name"], data_dir)
    if tuple(data.input_shape) != input_shape or data.num_classes != ds["num_classes"]:
        raise RunDirError(f"data set {ds['name']} from {data.source} has shape "
                          f"{data.input_shape} / {data.num_classes} classes, the run was "
                          f"trained on {list(input_shape)} / {ds['num_classes']}")
    data_record = rundir.data_used(manifest, data, ("train", "test"), allow_other_data)
    opset = profile["export"]["opset"]
    passes = profile["export"]["passes"]
    rules = profile["export"]["graph_rules"]
    int_ops = profile["export"]["integer_kernels"]
    ort_prof = profile.get("onnxruntime", {})
    floor = profile["validation"]["min_agreement"]

    with atomic_dir(out, replace=force) as tmp:
        calib = build_sets(data, adv, tmp / "calib", n_calib=n_calib, seed=seed)
        protos, members, pass_reports = [], [], []
        bar = _bar(len(specs) + 1, f"export {profile['name']}: members", progress)
        for i, (model, spec) in enumerate(zip(ens.members, specs)):
            rel = B.member_relpath(i, spec.name)
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            what = f"member {i} ({spec})"
            proto = OX.export_member(model, path, input_shape, opset)
            proto, reports = apply_passes(proto, passes, what)
            check_graph_rules(proto, rules, what)
            protos.append(proto)
            pass_reports.append(reports)
            bar.update(1)
        vote_mode = profile["export"].get("vote", C.VOTE_FULL)
        if reject_policy != "majority":
            # accepting only unanimous votes needs every member's vote on every row: the
            # early exit would skip exactly the votes the policy reads
            vote_mode = C.VOTE_FULL
        order = C.cascade_order(specs)
        ens_proto = graph.merge_ensemble(protos, ens.reference, ds["num_classes"], opset,
                                         vote=vote_mode, order=order)
        ens_proto = graph.add_accepted(ens_proto, reject_policy)
        check_graph_rules(ens_proto, rules, "ensemble.onnx")
        if storage_kind == "packed":
            storage, packed_rows = pack_bundle_weights(tmp, protos, ens_proto, specs)
        else:
            storage = packing.int8_storage(
                "requested" if weight_storage == "int8" else
                f"{profile['runtime']} builds its engine from the ONNX file itself and cannot "
                "take initializers from the side (no 2-bit type either): int8 initializers")
            packed_rows = [[] for _ in specs]
        # the kernel check runs on the files as stored, with the weights supplied the way
        # the device supplies them (unpacked from the packed files: packing.py)
        for i, (model, spec, proto) in enumerate(zip(ens.members, specs, protos)):
            rel = B.member_relpath(i, spec.name)
            onnx.save(proto, str(tmp / rel))
            layers = OX.expected_layers(model)
            counts = OX.kernel_counts(tmp / rel, ort_prof,
                                      packing.external_initializers(tmp, storage, rel))
            OX.check_integer_kernels(counts, layers, int_ops, f"member {i} ({spec})")
            members.append({
                "index": i, **spec.to_json(), "file": rel,
                "parameters": manifest["members"][i].get("parameters"),
                "weight_bytes": weight_bytes(model, spec, proto, packed_rows[i]),
                "layers": layers, "optimized_ops": counts,
                "integer_kernels": int(sum(counts.get(op, 0) for op in OX.INTEGER_OPS)),
                "passes": pass_reports[i],
                "host_clean_accuracy_run": manifest["members"][i].get("clean_accuracy"),
            })
        onnx.save(ens_proto, str(tmp / B.ENSEMBLE_FILE))
        ens_counts = OX.kernel_counts(tmp / B.ENSEMBLE_FILE, ort_prof,
                                      packing.external_initializers(tmp, storage,
                                                                    B.ENSEMBLE_FILE))
        bar.update(1)
        bar.close()

        if perturb is not None:
            perturb(ens)
        validation, host_accuracy, host_rejection = validate_bundle(
            tmp, ens, members, calib, ort_prof, floor, progress, storage, reject_policy)
        fp32 = next((i for i, s in enumerate(specs) if s.is_float), None)
        bundle_manifest = {
            "schema": B.BUNDLE_SCHEMA, "schema_version": B.SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "target": profile["name"], "runtime": profile["runtime"], "profile": profile,
            "input": {"name": C.INPUT_NAME, "shape": list(input_shape), "dtype": "float32",
                      "range": [0.0, 1.0], "batch": "dynamic", "layout": "NCHW"},
            "outputs": {"ensemble": {C.CLASS_IDS: "int64 [batch]",
                                     C.MEMBER_LOGITS: "float32 [members, batch, classes]; "
                                                      "NaN rows where a member did not run",
                                     C.MEMBER_RAN: "bool [members, batch]",
                                     C.ACCEPTED: "bool [batch]"},
                        "member": {C.MEMBER_OUTPUT: "float32 [batch, classes]"}},
            "dataset": ds["name"], "num_classes": int(ds["num_classes"]),
            "class_names": list(ds["class_names"]),
            "arch": manifest["arch"], "combiner": "vote",
            "vote": "strict majority of member argmaxes, else the reference member's argmax",
            "vote_execution": vote_execution(vote_mode, order, ens.reference),
            "reference_member": int(ens.reference), "fp32_member": fp32,
            "ensemble_file": B.ENSEMBLE_FILE, "ensemble_optimized_ops": ens_counts,
            "weight_storage": storage,
            "members": members, "calib": calib,
            "host_accuracy": host_accuracy,
            "reject_policy": {"name": reject_policy, "rule": REJECT_RULES[reject_policy]},
            "host_rejection": host_rejection,
            "host_accuracy_how": "PyTorch ensemble (vote) on exactly calib/clean.npz and "
                                 "calib/adv-adaptive.npz, measured by export",
            "eval_info": eval_info, "validation": validation,
            "source_run": {"path": str(run.resolve()), "name": run.resolve().name,
                           "manifest_sha256": sha256_file(run / "manifest.json"),
                           "seed": manifest.get("seed"), "data": data_record},
            "versions": _versions(),
            "export_seconds": None,
        }
        bundle_manifest["export_seconds"] = round(time.perf_counter() - t0, 2)
        bundle_manifest = B.write_manifest(tmp, bundle_manifest)
    echo(f"wrote {out}")
    return bundle_manifest


def vote_execution(mode: str, order: list[int], reference: int) -> dict:
    """The manifest's account of how ensemble.onnx runs the vote (docs/BUNDLE.md)."""
    if mode == C.VOTE_FULL:
        how = "every member runs on every row"
    else:
        how = ("members run in 'order' (cheapest first, the reference last); each member after "
               "the first always_open runs only on the rows where its vote can still change "
               "the decision; the decisions equal the full vote's")
    from edgempir.vote import always_open

    return {"mode": mode, "order": list(order), "reference_member": int(reference),
            "always_open": always_open(len(order)) if mode != C.VOTE_FULL else len(order),
            "how": how}


def apply_passes(proto, passes: list[str], what: str):
    reports = []
    for name in passes:
        if name == "tensorrt-qdq":
            from edgempir.targets.host.tensorrt_rules import check_rules, tensorrt_qdq_pass

            # the measurement that keeps this pass: how many TensorRT rules the raw graph breaks
            before = check_rules(proto)
            proto, rep = tensorrt_qdq_pass(proto, what)
            reports.append({**rep.to_json(), "rule_violations_before": len(before),
                            "rule_violations_after": len(check_rules(proto))})
        else:  # profile.py only admits known passes
            raise ExportError(f"unknown graph pass {name!r}")
    return proto, reports


def check_graph_rules(proto, rules: list[str], what: str) -> None:
    for name in rules:
        if name == "tensorrt":
            from edgempir.targets.host.tensorrt_rules import enforce_rules

            enforce_rules(proto, what)
        else:
            raise ExportError(f"unknown graph rule set {name!r}")


REJECT_RULES = {
    "majority": "every vote accepted (accepted is always true)",
    "unanimous": "the vote is accepted only when every member's argmax is the same class",
}


def validate_bundle(root: Path, ens, members: list, calib: dict, ort_prof: dict, floor: float,
                    progress: bool, storage: dict | None = None,
                    reject_policy: str = "majority") -> tuple[dict, dict, dict]:
    """ONNX Runtime (member files and ensemble.onnx) against PyTorch on clean and adv sets.

    Packed weights (``storage``) are unpacked and supplied exactly as on the device. Also
    the host's rejection rate per set (PyTorch members, ``edgempir.ensemble.accepted``) and
    the graph's ``accepted`` against numpy's rule on the graph's own member outputs.
    """
    import torch

    from edgempir.calib.npz import INPUT_NAME, LABEL_NAME, read_set
    from edgempir.ensemble import accepted as torch_accepted
    from edgempir.targets.device import packing
    from edgempir.targets.device.onnxruntime import OrtModel
    from edgempir.targets.host.onnx_export import (
        agreement_report,
        check_agreement,
        torch_member_logits,
    )
    from edgempir.vote import accepted, member_ran, vote

    def external(rel: str) -> dict:
        return packing.external_initializers(root, storage, rel)

    validation, host_accuracy, host_rejection = {}, {}, {}
    sessions = [OrtModel(root / m["file"], "member", ort_prof,
                         external_initializers=external(m["file"])) for m in members]
    ens_model = OrtModel(root / B.ENSEMBLE_FILE, "ensemble", ort_prof,
                         external_initializers=external(B.ENSEMBLE_FILE))
    names = ("clean", "adv-adaptive")
    bar = _bar(len(names), "validate: ONNX Runtime vs PyTorch", progress)
    for name in names:
        s = read_set(root / calib[name]["file"])
        x, y = s[INPUT_NAME], s[LABEL_NAME]
        ref = torch_member_logits(ens.members, x)
        ref_ids = vote(ref, ens.reference)
        host_accuracy[name] = float((ref_ids == y).mean())
        files = np.stack([_batched(sess, x)[1] for sess in sessions])
        ids, ens_logits = _batched(ens_model, x)
        graph_accepted = np.concatenate([ens_model.run_outputs(x[s:s + 256])[C.ACCEPTED]
                                         for s in range(0, len(x), 256)])
        host_rejection[name] = float(1 - torch_accepted(torch.from_numpy(ref),
                                                        reject_policy).float().mean())
        if not np.array_equal(graph_accepted, accepted(ens_logits, reject_policy)):
            raise ExportError("validation failed: 'accepted' inside ensemble.onnx disagrees "
                              "with edgempir.vote.accepted on its own member outputs")
        ran = member_ran(ens_logits)
        rep_files = agreement_report(ref, files, ref_ids, vote(files, ens.reference), y)
        rep_ens = agreement_report(ref, ens_logits, ref_ids, ids, y, ran=ran)
        # the vote inside the graph must be the vote of its own member outputs, exactly
        graph_vote_ok = bool(np.array_equal(ids, vote(ens_logits, ens.reference)))
        # and, early exit or not, the full vote of every member on every row (member files)
        full_ids = vote(files, ens.reference)
        validation[name] = {"n": len(y), "member_files": rep_files,
                            "ensemble_graph": rep_ens, "graph_vote_matches_numpy": graph_vote_ok,
                            "full_vote_agreement": float((ids == full_ids).mean()),
                            "member_ran_fraction": [float(r.mean()) for r in ran]}
        check_agreement(rep_files, floor, f"{name} (member files)")
        check_agreement(rep_ens, floor, f"{name} (ensemble.onnx)")
        if not graph_vote_ok:
            raise ExportError("validation failed: the vote inside ensemble.onnx disagrees with "
                              "edgempir.vote on its own member outputs")
        if validation[name]["full_vote_agreement"] < 1.0:
            raise ExportError(f"validation failed on {name}: ensemble.onnx decides differently "
                              "from the full vote of the member files on "
                              f"{int((ids != full_ids).sum())} images; the early exit must not "
                              "change a decision")
        bar.update(1)
    bar.close()
    validation["min_agreement"] = floor
    validation["runtime"] = ens_model.info()
    return validation, host_accuracy, host_rejection


def _batched(model, x: np.ndarray, batch: int = 256):
    ids, logits = [], []
    for s in range(0, len(x), batch):
        a, b = model.run(x[s:s + batch])
        ids.append(a)
        logits.append(b)
    axis = 1 if logits and logits[0].ndim == 3 else 0
    return np.concatenate(ids), np.concatenate(logits, axis=axis)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _versions() -> dict:
    return provenance.versions("torch", "brevitas", "onnx", "onnxruntime", "numpy")
