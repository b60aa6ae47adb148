"""The packing half of packed 2/4-bit weight storage (export side).

The format and the unpacking half live on the device side
(:mod:`edgempir.targets.device.packing`); this module only writes what that one reads.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgempir.targets.device import bundle as B
from edgempir.targets.device.packing import PACK_BITS, PackingError, value_range


def fits(values: np.ndarray, bits: int) -> bool:
    lo, hi = value_range(bits)
    v = np.asarray(values)
    return v.size == 0 or (int(v.min()) >= lo and int(v.max()) <= hi)


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """int8 values -> uint8 bytes, ``bits`` per value (see the module docstring)."""
    if bits not in PACK_BITS:
        raise PackingError(f"cannot pack {bits}-bit values; packed widths are {PACK_BITS}")
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise PackingError(f"packing needs integer values, got {v.dtype}")
    if not fits(v, bits):
        lo, hi = value_range(bits)
        raise PackingError(f"values {int(v.min())}..{int(v.max())} do not fit {bits} signed "
                           f"bits ({lo}..{hi})")
    per = 8 // bits
    u = (v.astype(np.int16).ravel() + (1 << (bits - 1))).astype(np.uint8)
    pad = (-u.size) % per
    if pad:
        u = np.concatenate([u, np.zeros(pad, dtype=np.uint8)])
    u = u.reshape(-1, per)
    out = np.zeros(u.shape[0], dtype=np.uint8)
    for j in range(per):
        out |= u[:, j] << np.uint8(j * bits)
    return out


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
