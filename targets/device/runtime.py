"""Open a bundle's ensemble or one member with the runtime its target names (device side).

``open_model(bundle, which)`` returns an object with ``run(x) -> (class_ids, logits)``,
``info()`` and ``memory_info()``; ``bench`` uses only that. Imports are lazy so a device
with only ONNX Runtime never imports TensorRT and vice versa.

Packed weights (manifest ``weight_storage``, docs/BUNDLE.md) are unpacked here, after
``verify_bundle`` has checked the sha256 of the packed files, and handed to ONNX Runtime
as external initializers. TensorRT builds its engine from the ONNX file alone, so a
TensorRT bundle with packed weights is refused (jetson exports keep int8 initializers).
"""
from __future__ import annotations

from edgempir.errors import BundleError
from edgempir.targets.device import packing
from edgempir.targets.device.bundle import Bundle, verify_bundle


def open_model(bundle, which="ensemble", threads: int | None = None,
               providers: list | None = None):
    """``which`` is "ensemble" or a member index. ``bundle`` is a Bundle or a path."""
    if not isinstance(bundle, Bundle):
        bundle = verify_bundle(bundle)
    if which == "ensemble":
        path, kind = bundle.ensemble_file, "ensemble"
    elif isinstance(which, int) and not isinstance(which, bool):
        path, kind = bundle.member_file(which), "member"
    else:
        raise BundleError(f"cannot open {which!r} of bundle {bundle.path}; use 'ensemble' or a "
                          f"member index 0..{len(bundle.members) - 1}")
    storage = bundle.manifest.get("weight_storage")
    packed = isinstance(storage, dict) and storage.get("format") == packing.PACKED_FORMAT
    if bundle.runtime == "onnxruntime":
        from edgempir.targets.device.onnxruntime import OrtModel

        rel = path.relative_to(bundle.path).as_posix()
        try:
            externals = packing.external_initializers(bundle.path, storage, rel)
        except (OSError, KeyError, TypeError, packing.PackingError) as e:
            raise BundleError(f"bundle {bundle.path}: cannot unpack the weights of {rel} ({e}); "
                              "copy the bundle again or re-export it") from None
        lead = bundle.fp32_member if bundle.fp32_member is not None else bundle.reference_member
        execution = bundle.manifest.get("vote_execution") or {}
        if execution.get("mode") == "early-exit" and execution.get("order"):
            # parallel branches (inter_op_threads > 1): the members that run on every row
            # side by side; the later ones wait for them anyway
            lead = execution["order"][0]
        return OrtModel(path, kind, bundle.profile.get("onnxruntime"), threads, providers,
                        bundle.input_name, external_initializers=externals, lead_member=lead)
    if bundle.runtime == "tensorrt" and packed:
        raise BundleError(f"bundle {bundle.path} stores packed weights, which TensorRT cannot "
                          "take from the side; re-export it with a TensorRT profile (jetson "
                          "bundles keep int8 initializers)")
    if bundle.runtime == "tensorrt":
        from edgempir.targets.device import tensorrt

        tensorrt.require_tensorrt(bundle)
        return tensorrt.TrtModel.open(bundle, path, kind)
    raise BundleError(f"bundle {bundle.path} names runtime {bundle.runtime!r}, which this "
                      "edgempir does not know; upgrade edgempir or re-export the bundle")
