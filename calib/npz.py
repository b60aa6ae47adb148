"""npz sets keyed by the model's input name, read without pickle.

A set is ``{INPUT_NAME: float32 [N, C, H, W] in [0, 1], LABEL_NAME: int64 [N]}`` plus
optional extra arrays (e.g. ``clean_index`` for adversarial sets). ``read_set`` loads with
``allow_pickle=False`` and checks names, dtypes, shapes and value ranges before returning,
so a hostile or truncated file gives a one-line error instead of running anything.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from edgempir.contract import INPUT_NAME, LABEL_NAME  # every set is keyed by the graph's input name
from edgempir.errors import BundleError
from edgempir.fsutil import atomic_write_bytes

MAX_SET_BYTES = 1 << 30   # 1 GiB over all arrays of a set, from the headers, before allocating
ARRAY_KINDS = "biufU"     # bool, int, uint, float, text; never object (pickle) or void (raw)


def write_set(path: str | os.PathLike, x: np.ndarray, y: np.ndarray, **extra: np.ndarray) -> None:
    """Atomically write a set; x is float32 in [0, 1], y int64 class ids."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"set needs x [N, C, H, W] and y [N], got {x.shape} and {y.shape}")
    buf = io.BytesIO()
    arrays: dict[str, np.ndarray] = {INPUT_NAME: x, LABEL_NAME: y, **extra}
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    atomic_write_bytes(path, buf.getvalue())


def read_set(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None,
             num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Read and check a set. ``input_shape`` is [C, H, W] without the batch dimension."""
    path = Path(path)
    arrays = _load_arrays(path)
    if INPUT_NAME not in arrays or LABEL_NAME not in arrays:
        raise BundleError(f"{path}: needs arrays {INPUT_NAME!r} and {LABEL_NAME!r}, has "
                          f"{sorted(arrays)}; re-export the bundle")
    x, y = arrays[INPUT_NAME], arrays[LABEL_NAME]
    if x.dtype != np.float32 or x.ndim != 4:
        raise BundleError(f"{path}: {INPUT_NAME!r} must be float32 [N, C, H, W], got {x.dtype} "
                          f"{list(x.shape)}; re-export the bundle")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise BundleError(f"{path}: inputs have shape {list(x.shape[1:])} but the model takes "
                          f"{list(input_shape)}; re-export the bundle for this model")
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise BundleError(f"{path}: {LABEL_NAME!r} must be {x.shape[0]} integer labels, got "
                          f"{y.dtype} {list(y.shape)}; re-export the bundle")
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise BundleError(f"{path}: inputs must be finite and in [0, 1]; re-export the bundle")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise BundleError(f"{path}: labels outside 0..{num_classes - 1}; re-export the bundle")
    arrays[LABEL_NAME] = y.astype(np.int64)
    return arrays


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path``. Before anything is allocated: the file must be
    a zip of .npy members only, each header readable and of a plain dtype, the total bytes
    (itemsize x count, from the headers) bounded."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise BundleError(f"{path}: file not found; re-export the bundle") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot be read ({e.strerror or e}); re-export the "
                          "bundle") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # a bare .npy or a pickle is not a set
        raise BundleError(f"{path}: not an npz set (not a zip archive); re-export the bundle")
    try:
        with np.load(path, allow_pickle=False) as z:
            total = 0
            for info in z.zip.infolist():
                if not info.filename.endswith(".npy"):
                    raise BundleError(f"{path}: member {info.filename!r} is not a .npy array; "
                                      "re-export the bundle")
                shape, dtype = _member_header(path, z, info.filename)
                if dtype.kind not in ARRAY_KINDS:
                    raise BundleError(f"{path}: member {info.filename!r} has dtype {dtype.str}; "
                                      "a set holds numbers and text only; re-export the bundle")
                total += int(math.prod(shape)) * dtype.itemsize  # Python ints: no wrap-around
                if total > MAX_SET_BYTES:
                    raise BundleError(f"{path}: arrays of {total} bytes and more (member "
                                      f"{info.filename!r}: {dtype.str} {list(shape)}), more "
                                      f"than the {MAX_SET_BYTES} a set may have; rebuild the "
                                      "set")
            return {name: z[name] for name in z.files}
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/zlib/numpy raise many types on garbage
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BundleError(f"{path}: not a readable npz set ({first}); re-export the "
                          "bundle") from None


def _member_header(path: Path, z, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an npz member's .npy header, read without loading the array."""
    from numpy.lib import format as npformat

    try:
        with z.zip.open(member) as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version}")
    except Exception as e:  # noqa: BLE001 - a header we cannot read is a corrupt set
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BundleError(f"{path}: member {member!r} has no readable .npy header ({first}); "
                          "re-export the bundle") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)
