"""The packing half of packed 2/4-bit weight storage (export side).

The format and the unpacking half live on the device side
(:mod:`edgempir.targets.device.packing`); this module only writes what that one reads.
"""
from __future__ import annotations

import numpy as np

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
