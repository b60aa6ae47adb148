"""The runtimes a bundle can name, and opening a bundle's model with its own (device side).

:data:`RUNTIMES` is the one registry: a target profile's ``runtime`` (and which runtime
tables it needs), a manifest's ``runtime``, ``bench``'s "is it installed here" check,
``export``'s default weight storage and ``build`` all read it, so no module branches on a runtime's name. Add a runtime by
adding an entry here (and its module).

``open_model(bundle, which)`` returns an object with ``run(x) -> (class_ids, logits)``,
``run_outputs(x)``, ``info()`` and ``memory_info()``; ``bench`` uses only that. Imports are
lazy so a device with only ONNX Runtime never imports TensorRT and vice versa.

Packed weights (manifest ``weight_storage``, docs/BUNDLE.md) are unpacked here, after
``verify_bundle`` has checked the sha256 of the packed files, and handed to ONNX Runtime
as external initializers. TensorRT builds its engine from the ONNX file alone, so a
TensorRT bundle with packed weights is refused (jetson exports keep int8 initializers).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgempir.errors import BundleError
from edgempir.targets.device import packing

if TYPE_CHECKING:  # bundle.py imports this module's names (through profile.py)
    from edgempir.targets.device.bundle import Bundle


@dataclass(frozen=True)
class Runtime:
    """What edgempir needs to know about one runtime."""

    name: str
    label: str                  # how messages name it
    package: str                # the Python module that must be importable on the device
    missing: str                # the one-line error when it is not: {path} and {target} filled
    open: Callable[..., Any]    # (bundle, onnx path, kind, threads, providers) -> model
    packed_weights: bool        # takes initializers from the side (packed 2/4-bit storage)
    builds_engines: bool        # has engines for ``edgempir build`` to build on the device
    own_table: bool             # a profile for it needs its [<name>] table, others may not


def _open_onnxruntime(bundle: Bundle, path: Path, kind: str, threads: int | None,
                      providers: list | None):
    from edgempir.targets.device.onnxruntime import OrtModel

    rel = path.relative_to(bundle.path).as_posix()
    storage = bundle.manifest.get("weight_storage")
    try:
        externals = packing.external_initializers(bundle.path, storage, rel)
    except (OSError, KeyError, TypeError, packing.PackingError) as e:
        raise BundleError(f"bundle {bundle.path}: cannot unpack the weights of {rel} ({e}); "
                          "copy the bundle again or re-export it") from None
    return OrtModel(path, kind, bundle.profile.get("onnxruntime"), threads, providers,
                    bundle.input_name, external_initializers=externals,
                    lead_member=lead_member(bundle))


def lead_member(bundle: Bundle) -> int:
    """The member whose branch gets ONNX Runtime's stream 0 to itself in parallel mode."""
    lead = bundle.fp32_member if bundle.fp32_member is not None else bundle.reference_member
    execution = bundle.manifest.get("vote_execution") or {}
    if execution.get("mode") == "early-exit" and execution.get("order"):
        # parallel branches (inter_op_threads > 1): the members that run on every row
        # side by side; the later ones wait for them anyway
        lead = execution["order"][0]
    return lead


def _open_tensorrt(bundle: Bundle, path: Path, kind: str, threads: int | None,
                   providers: list | None):
    from edgempir.targets.device import tensorrt

    tensorrt.require_tensorrt(bundle)
    return tensorrt.TrtModel.open(bundle, path, kind)


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime(
        name="onnxruntime", label="ONNX Runtime", package="onnxruntime",
        missing="{path} needs ONNX Runtime, which is not installed here; "
                "pip install 'edgempir[device]'",
        open=_open_onnxruntime, packed_weights=True, builds_engines=False, own_table=False),
    "tensorrt": Runtime(
        name="tensorrt", label="TensorRT", package="tensorrt",
        missing="{path} is a TensorRT bundle (target {target}) but TensorRT is not installed "
                "here; run it on the Jetson (JetPack's python3-libnvinfer) or export for "
                "--target arm or x86",
        open=_open_tensorrt, packed_weights=False, builds_engines=True, own_table=True),
}
RUNTIME_NAMES = tuple(RUNTIMES)


def runtime_of(bundle: Bundle) -> Runtime:
    """The bundle's runtime, or a one-line error for a name this edgempir does not know."""
    rt = RUNTIMES.get(bundle.runtime)
    if rt is None:
        raise BundleError(f"bundle {bundle.path} names runtime {bundle.runtime!r}, which this "
                          "edgempir does not know; upgrade edgempir or re-export the bundle")
    return rt


def check_runtime_present(bundle: Bundle) -> None:
    """A bundle for a runtime this machine lacks: one line that says what to do."""
    rt = runtime_of(bundle)
    if importlib.util.find_spec(rt.package) is None:
        raise BundleError(rt.missing.format(path=bundle.path, target=bundle.target))


def open_model(bundle, which="ensemble", threads: int | None = None,
               providers: list | None = None):
    """``which`` is "ensemble" or a member index. ``bundle`` is a Bundle or a path."""
    from edgempir.targets.device.bundle import Bundle, verify_bundle

    if not isinstance(bundle, Bundle):
        bundle = verify_bundle(bundle)
    if which == "ensemble":
        path, kind = bundle.ensemble_file, "ensemble"
    elif isinstance(which, int) and not isinstance(which, bool):
        path, kind = bundle.member_file(which), "member"
    else:
        raise BundleError(f"cannot open {which!r} of bundle {bundle.path}; use 'ensemble' or a "
                          f"member index 0..{len(bundle.members) - 1}")
    rt = runtime_of(bundle)
    storage = bundle.manifest.get("weight_storage")
    packed = isinstance(storage, dict) and storage.get("format") == packing.PACKED_FORMAT
    if packed and not rt.packed_weights:
        raise BundleError(f"bundle {bundle.path} stores packed weights, which {rt.label} cannot "
                          f"take from the side; re-export it with a {rt.label} profile (jetson "
                          "bundles keep int8 initializers)")
    return rt.open(bundle, path, kind, threads, providers)
