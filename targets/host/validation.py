"""Export's validation stage: the bundle's files under ONNX Runtime against PyTorch, on the
clean and adversarial sets, before the bundle exists (host side)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgempir import contract as C
from edgempir.targets.device import bundle as B
from edgempir.targets.device.accuracy import predict_all  # the device's batched run, reused
from edgempir.targets.host.onnx_export import ExportError

VALIDATION_SETS = ("clean", "adv-adaptive")
BATCH = 256


def validate_bundle(root: Path, ens, members: list, calib: dict, ort_prof: dict, floor: float,
                    progress: bool, storage: dict | None = None,
                    reject_policy: str = "majority") -> tuple[dict, dict, dict]:
    """ONNX Runtime (member files and ensemble.onnx) against PyTorch on clean and adv sets.

    Packed weights (``storage``) are unpacked and supplied exactly as on the device. Also
    the host's rejection rate per set (PyTorch members, ``edgempir.ensemble.accepted``) and
    the graph's ``accepted`` against numpy's rule on the graph's own member outputs.
    """
    from tqdm import tqdm

    from edgempir.calib.npz import INPUT_NAME, LABEL_NAME, read_set
    from edgempir.targets.device import packing
    from edgempir.targets.device.onnxruntime import OrtModel

    def open_file(rel: str, kind: str) -> OrtModel:
        return OrtModel(root / rel, kind, ort_prof,
                        external_initializers=packing.external_initializers(root, storage, rel))

    sessions = [open_file(m["file"], "member") for m in members]
    ens_model = open_file(B.ENSEMBLE_FILE, "ensemble")
    validation, host_accuracy, host_rejection = {}, {}, {}
    with tqdm(total=len(VALIDATION_SETS), desc="validate: ONNX Runtime vs PyTorch",
              disable=not progress, leave=False) as bar:
        for name in VALIDATION_SETS:
            s = read_set(root / calib[name]["file"])
            validation[name], host_accuracy[name], host_rejection[name] = validate_set(
                name, s[INPUT_NAME], s[LABEL_NAME], ens, sessions, ens_model, floor,
                reject_policy)
            bar.update(1)
    validation["min_agreement"] = floor
    validation["runtime"] = ens_model.info()
    return validation, host_accuracy, host_rejection


def validate_set(name: str, x: np.ndarray, y: np.ndarray, ens, sessions: list, ens_model,
                 floor: float, reject_policy: str) -> tuple[dict, float, float]:
    """One set: (validation figures, host accuracy, host rejection rate); raises an
    ExportError on the first disagreement beyond what the bundle may have."""
    import torch

    from edgempir.ensemble import accepted as torch_accepted
    from edgempir.targets.host.onnx_export import (
        agreement_report,
        check_agreement,
        torch_member_logits,
    )
    from edgempir.vote import member_ran, vote

    ref = torch_member_logits(ens.members, x)
    ref_ids = vote(ref, ens.reference)
    files = np.stack([predict_all(sess, x, BATCH)[1] for sess in sessions])
    ids, ens_logits = predict_all(ens_model, x, BATCH)
    check_accepted(ens_model, x, ens_logits, reject_policy)
    ran = member_ran(ens_logits)
    rep_files = agreement_report(ref, files, ref_ids, vote(files, ens.reference), y)
    rep_ens = agreement_report(ref, ens_logits, ref_ids, ids, y, ran=ran)
    # the vote inside the graph must be the vote of its own member outputs, exactly
    graph_vote_ok = bool(np.array_equal(ids, vote(ens_logits, ens.reference)))
    # and, early exit or not, the full vote of every member on every row (member files)
    full_ids = vote(files, ens.reference)
    figures = {"n": len(y), "member_files": rep_files,
               "ensemble_graph": rep_ens, "graph_vote_matches_numpy": graph_vote_ok,
               "full_vote_agreement": float((ids == full_ids).mean()),
               "member_ran_fraction": [float(r.mean()) for r in ran]}
    check_agreement(rep_files, floor, f"{name} (member files)")
    check_agreement(rep_ens, floor, f"{name} (ensemble.onnx)")
    if not graph_vote_ok:
        raise ExportError("validation failed: the vote inside ensemble.onnx disagrees with "
                          "edgempir.vote on its own member outputs")
    if figures["full_vote_agreement"] < 1.0:
        raise ExportError(f"validation failed on {name}: ensemble.onnx decides differently "
                          "from the full vote of the member files on "
                          f"{int((ids != full_ids).sum())} images; the early exit must not "
                          "change a decision")
    rejection = float(1 - torch_accepted(torch.from_numpy(ref), reject_policy).float().mean())
    return figures, float((ref_ids == y).mean()), rejection


def check_accepted(ens_model, x: np.ndarray, ens_logits: np.ndarray, reject_policy: str
                   ) -> None:
    """The graph's ``accepted`` output must be numpy's rule on its own member outputs."""
    from edgempir.vote import accepted

    graph_accepted = np.concatenate([ens_model.run_outputs(x[s:s + BATCH])[C.ACCEPTED]
                                     for s in range(0, len(x), BATCH)])
    if not np.array_equal(graph_accepted, accepted(ens_logits, reject_policy)):
        raise ExportError("validation failed: 'accepted' inside ensemble.onnx disagrees "
                          "with edgempir.vote.accepted on its own member outputs")
