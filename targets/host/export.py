"""``edgempir export``: a run directory (trained and evaluated) -> a bundle for one target.

The export is a sequence of named stages (:data:`STAGES`), each a small function over one
:class:`Work` object, all inside ``OUT.tmp-<pid>`` (renamed onto OUT only when every check
passed, so a failure or a kill leaves nothing half-written). Before them,
:func:`prepare` reads and checks everything the stages need (profile, run, eval report,
data) without touching OUT.

1. ``sets``: calibration (training images), clean (the test images eval attacked) and the
   adversarial examples of eval's adaptive protocol, in calib/;
2. ``export members``: Brevitas QCDQ export of each member;
3. ``passes`` and ``rules``: the profile's graph passes and graph rule sets, looked up in
   the registries of :mod:`~edgempir.targets.host.passes`;
4. ``merge``: ensemble.onnx, the members and the vote in one graph, checked by the same
   rules;
5. ``pack``: for ONNX Runtime targets the 2- and 4-bit integer weights are packed into
   ``members/<i>-<spec>.packed.bin`` and the ONNX files reference them as external data
   (targets/device/packing.py);
6. ``kernels``: the files are saved and ONNX Runtime's optimised graphs checked (every
   quantized conv/linear an integer kernel), weights supplied the way the device
   supplies them;
7. ``validate``: ONNX Runtime against PyTorch on the clean and adversarial sets, per
   member and for the ensemble; top-1 agreement below the floor (0.995) fails the export
   (validation.py);
8. ``write``: manifest.json with the profile, members, weight bytes, host accuracies,
   validation figures, eval provenance and the sha256 of every file (manifest.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgempir import contract as C
from edgempir.errors import EdgempirError, RunDirError
from edgempir.fsutil import show_path
from edgempir.targets.device import bundle as B
from edgempir.targets.device.runtime import RUNTIMES
from edgempir.targets.host.onnx_export import ExportError
from edgempir.targets.host.passes import apply_passes, check_graph_rules

PROTOCOL = "adaptive"


def default_out(run: Path, target_name: str) -> Path:
    return Path("bundles") / f"{Path(run).resolve().name}-{target_name}"


# ------------------------------------------------------------------ inputs
def find_eval(run: Path, adv: dict) -> dict:
    """The adaptive eval report that produced the adversarial set, as provenance."""
    import numpy as np

    from edgempir.fsutil import sha256_file
    from edgempir.rundir import EVAL_DIR, read_eval_report

    config = str(adv["config"]) if "config" in adv else None
    found = read_eval_report(run, PROTOCOL, config)
    if found is None:
        raise RunDirError(f"{run} has eval/adv-adaptive.npz but no {PROTOCOL} eval report "
                          f"(eval/{PROTOCOL}-<config>.json); rerun 'edgempir eval {run}'")
    path, report = found
    return {"protocol": PROTOCOL, "config": report["config"], "eps": report["eps"],
            "norm": report["norm"],
            "adv_eps": float(np.asarray(adv["eps"]).reshape(-1)[0]) if "eps" in adv else None,
            "n_examples": report["n_examples"], "seed": report["seed"],
            "report_file": f"{EVAL_DIR}/{path.name}", "report_sha256": sha256_file(path),
            "adv_sha256": sha256_file(Path(run) / EVAL_DIR / "adv-adaptive.npz"),
            "report": {"results": report["results"],
                       "worst_case_over": report["worst_case_over"]}}


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise EdgempirError(f"output directory {show_path(out)} already exists; pass --force to "
                            "replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise EdgempirError(f"{show_path(out)} exists and is not a directory; choose another "
                            "--out")


def storage_choice(profile: dict, requested: str | None) -> str:
    """``packed`` or ``int8``: packed where the runtime takes initializers from the side
    (ONNX Runtime), int8 where it builds from the ONNX file alone (TensorRT)."""
    takes_packed = RUNTIMES[profile["runtime"]].packed_weights
    if requested is None:
        return "packed" if takes_packed else "int8"
    if requested not in ("packed", "int8"):
        raise EdgempirError(f"weight storage {requested!r} is unknown; use 'packed' or 'int8'")
    if requested == "packed" and not takes_packed:
        raise EdgempirError(f"target {profile['name']} runs {profile['runtime']}, which builds "
                            "from the ONNX file alone: packed weight storage is for ONNX "
                            "Runtime targets; use int8")
    return requested


@dataclass
class Work:
    """What the stages share: the checked inputs (set by :func:`prepare`), then what each
    stage adds, in stage order."""

    run: Path
    out: Path
    profile: dict
    run_manifest: dict
    ens: Any                      # the PyTorch ensemble (edgempir.ensemble)
    data: Any                     # the data set the sets are drawn from
    data_record: dict             # source_run.data: which data was used
    adv: dict                     # eval's adversarial examples
    eval_info: dict
    storage_kind: str             # packed | int8
    weight_storage: str | None    # as requested (None: the runtime's default)
    reject_policy: str
    n_calib: int
    seed: int
    progress: bool
    started: float
    perturb: Callable | None = None
    bar: Any = None
    tmp: Path = Path()
    calib: dict = field(default_factory=dict)
    protos: list = field(default_factory=list)
    pass_reports: list = field(default_factory=list)
    ens_proto: Any = None
    storage: dict = field(default_factory=dict)
    packed_rows: list = field(default_factory=list)
    members: list = field(default_factory=list)
    ens_counts: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    host_accuracy: dict = field(default_factory=dict)
    host_rejection: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def specs(self) -> list:
        return self.ens.specs

    @property
    def dataset(self) -> dict:
        return self.run_manifest["dataset"]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.dataset["input_shape"])

    @property
    def opset(self) -> int:
        return self.profile["export"]["opset"]

    @property
    def vote_mode(self) -> str:
        if self.reject_policy != "majority":
            # accepting only unanimous votes needs every member's vote on every row: the
            # early exit would skip exactly the votes the policy reads
            return C.VOTE_FULL
        return self.profile["export"].get("vote", C.VOTE_FULL)

    def external(self, rel: str) -> dict:
        """The packed weights of one file, unpacked as the device unpacks them."""
        from edgempir.targets.device import packing

        return packing.external_initializers(self.tmp, self.storage, rel)


def prepare(run: str | Path, target: str, out: str | Path | None, *, force: bool,
            data_dir: str | None, reject_policy: str, weight_storage: str | None,
            allow_other_data: bool, **settings) -> Work:
    """Read and check every input before OUT is touched; ``settings``: the rest of
    :class:`Work`'s fields (n_calib, seed, progress, started, perturb)."""
    from edgempir import rundir
    from edgempir.calib.build import read_adversarial
    from edgempir.data import load_dataset
    from edgempir.targets.host.profiles import load_profile
    from edgempir.vote import REJECT_POLICIES

    if reject_policy not in REJECT_POLICIES:
        raise ExportError(f"--reject-policy {reject_policy!r} is unknown; choose one of "
                          f"{', '.join(REJECT_POLICIES)}")
    profile = load_profile(target)
    storage_kind = storage_choice(profile, weight_storage)
    run = Path(run)
    out = Path(out) if out is not None else default_out(run, profile["name"])
    check_out(out, force)
    manifest = rundir.read_manifest(run)
    if not (run / rundir.EVAL_DIR).is_dir():
        raise RunDirError(f"{run} has not been evaluated (no eval/ folder); run 'edgempir eval "
                          f"{run}' first: the bundle carries its adversarial examples")
    ds = manifest["dataset"]
    input_shape = tuple(ds["input_shape"])
    adv = read_adversarial(run, input_shape, ds["num_classes"])
    eval_info = find_eval(run, adv)
    ens = rundir.load_run(run)
    data = load_dataset(ds["name"], data_dir)
    if tuple(data.input_shape) != input_shape or data.num_classes != ds["num_classes"]:
        raise RunDirError(f"data set {ds['name']} from {data.source} has shape "
                          f"{data.input_shape} / {data.num_classes} classes, the run was "
                          f"trained on {list(input_shape)} / {ds['num_classes']}")
    return Work(run=run, out=out, profile=profile, run_manifest=manifest, ens=ens, data=data,
                data_record=rundir.data_used(manifest, data, ("train", "test"),
                                             allow_other_data),
                adv=adv, eval_info=eval_info, storage_kind=storage_kind,
                weight_storage=weight_storage, reject_policy=reject_policy, **settings)


# ------------------------------------------------------------------ the stages
def build_calib_sets(w: Work) -> None:
    from edgempir.calib.build import build_sets

    w.calib = build_sets(w.data, w.adv, w.tmp / "calib", n_calib=w.n_calib, seed=w.seed)


def export_members(w: Work) -> None:
    """Brevitas QCDQ export of each member into members/<i>-<spec>.onnx."""
    from edgempir.targets.host import onnx_export as OX

    w.bar = _bar(len(w.specs) + 1, f"export {w.profile['name']}: members", w.progress)
    for i, (model, spec) in enumerate(zip(w.ens.members, w.specs)):
        path = w.tmp / B.member_relpath(i, spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        w.protos.append(OX.export_member(model, path, w.input_shape, w.opset))


def _member_label(i: int, spec) -> str:
    return f"member {i} ({spec})"


def run_passes(w: Work) -> None:
    """The profile's graph passes on every member (registry: passes.PASSES)."""
    for i, spec in enumerate(w.specs):
        w.protos[i], reports = apply_passes(w.protos[i], w.profile["export"]["passes"],
                                            _member_label(i, spec))
        w.pass_reports.append(reports)


def check_member_rules(w: Work) -> None:
    """The profile's graph rule sets on every member (registry: passes.RULES)."""
    for i, (proto, spec) in enumerate(zip(w.protos, w.specs)):
        check_graph_rules(proto, w.profile["export"]["graph_rules"], _member_label(i, spec))
        w.bar.update(1)


def merge(w: Work) -> None:
    """ensemble.onnx: every member and the vote in one graph, plus the reject policy's
    ``accepted`` output; checked by the same rule sets as the members."""
    from edgempir.targets.host import graph

    ens_proto = graph.merge_ensemble(w.protos, w.ens.reference, w.dataset["num_classes"],
                                     w.opset, vote=w.vote_mode,
                                     order=C.cascade_order(w.specs))
    w.ens_proto = graph.add_accepted(ens_proto, w.reject_policy)
    check_graph_rules(w.ens_proto, w.profile["export"]["graph_rules"], B.ENSEMBLE_FILE)


def pack(w: Work) -> None:
    """Packed 2/4-bit weights (ONNX Runtime targets), else int8 initializers."""
    from edgempir.targets.device import packing
    from edgempir.targets.host.pack import pack_bundle_weights

    if w.storage_kind == "packed":
        w.storage, w.packed_rows = pack_bundle_weights(w.tmp, w.protos, w.ens_proto, w.specs)
        return
    w.storage = packing.int8_storage(
        "requested" if w.weight_storage == "int8" else
        f"{w.profile['runtime']} builds its engine from the ONNX file itself and cannot "
        "take initializers from the side (no 2-bit type either): int8 initializers")
    w.packed_rows = [[] for _ in w.specs]


def save_and_check_kernels(w: Work) -> None:
    """Save the files, then check ONNX Runtime's optimised graphs of them as stored, with
    the weights supplied the way the device supplies them (unpacked: packing.py)."""
    import onnx

    from edgempir.targets.host import onnx_export as OX
    from edgempir.targets.host.manifest import member_entry

    ort_prof = w.profile.get("onnxruntime", {})
    for i, (model, spec, proto) in enumerate(zip(w.ens.members, w.specs, w.protos)):
        rel = B.member_relpath(i, spec.name)
        onnx.save(proto, str(w.tmp / rel))
        layers = OX.expected_layers(model)
        counts = OX.kernel_counts(w.tmp / rel, ort_prof, w.external(rel))
        OX.check_integer_kernels(counts, layers, w.profile["export"]["integer_kernels"],
                                 _member_label(i, spec))
        w.members.append(member_entry(w, i, layers, counts))
    onnx.save(w.ens_proto, str(w.tmp / B.ENSEMBLE_FILE))
    w.ens_counts = OX.kernel_counts(w.tmp / B.ENSEMBLE_FILE, ort_prof,
                                    w.external(B.ENSEMBLE_FILE))
    w.bar.update(1)
    w.bar.close()


def validate(w: Work) -> None:
    from edgempir.targets.host.validation import validate_bundle

    if w.perturb is not None:
        w.perturb(w.ens)
    w.validation, w.host_accuracy, w.host_rejection = validate_bundle(
        w.tmp, w.ens, w.members, w.calib, w.profile.get("onnxruntime", {}),
        w.profile["validation"]["min_agreement"], w.progress, w.storage, w.reject_policy)


def write(w: Work) -> None:
    from edgempir.targets.host.manifest import bundle_manifest

    manifest = bundle_manifest(w)
    manifest["export_seconds"] = round(time.perf_counter() - w.started, 2)
    w.manifest = B.write_manifest(w.tmp, manifest)


#: the export, in order: (name, stage); each stage reads and extends the Work
STAGES: tuple[tuple[str, Callable[[Work], None]], ...] = (
    ("sets", build_calib_sets),
    ("export members", export_members),
    ("passes", run_passes),
    ("rules", check_member_rules),
    ("merge", merge),
    ("pack", pack),
    ("kernels", save_and_check_kernels),
    ("validate", validate),
    ("write", write),
)


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
    from edgempir.fsutil import atomic_dir

    w = prepare(run, target, out, force=force, data_dir=data_dir, reject_policy=reject_policy,
                weight_storage=weight_storage, allow_other_data=allow_other_data,
                n_calib=n_calib, seed=seed, progress=progress, started=time.perf_counter(),
                perturb=perturb)
    with atomic_dir(w.out, replace=force) as tmp:
        w.tmp = tmp
        for _name, stage in STAGES:
            stage(w)
    echo(f"wrote {w.out}")
    return w.manifest


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
