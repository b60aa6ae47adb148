"""Open a bundle's ensemble or one member with the runtime its target names (device side).

``open_model(bundle, which)`` returns an object with ``run(x) -> (class_ids, logits)``,
``info()`` and ``memory_info()``; ``bench`` uses only that. Imports are lazy so a device
with only ONNX Runtime never imports TensorRT and vice versa.
"""
from __future__ import annotations

from edgempir.targets.bundle import Bundle, verify_bundle

from edgempir.errors import BundleError


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
    if bundle.runtime == "onnxruntime":
        from edgempir.targets.onnxruntime import OrtModel

        return OrtModel(path, kind, bundle.profile.get("onnxruntime"), threads, providers,
                        bundle.input_name)
    if bundle.runtime == "tensorrt":
        from edgempir.targets import tensorrt

        tensorrt.require_tensorrt(bundle)
        return tensorrt.TrtModel.open(bundle, path, kind)
    raise BundleError(f"bundle {bundle.path} names runtime {bundle.runtime!r}, which this "
                      "edgempir does not know; upgrade edgempir or re-export the bundle")
