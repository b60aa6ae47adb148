"""Packed 2- and 4-bit weight storage (device side: numpy only, Python 3.10).

ONNX has no 2-bit type, and ONNX Runtime's QLinearConv takes int8/uint8 weights only (no
INT4), so an exported w2 or w4 member holds its weights as int8 initializers: four (w2)
or two (w4) times the bytes the values need. ``export`` therefore writes every low-bit
integer weight of an ``onnxruntime`` bundle *packed* into one file per member,
``members/<i>-<spec>.packed.bin``, and marks those initializers in the ONNX files as
external data (``data_location = EXTERNAL``, ``location`` = the packed file). The ONNX
files then no longer hold them. At load, :func:`external_initializers` unpacks them with
numpy into the int8 arrays the graph expects and the runtime hands them to ONNX Runtime
with ``SessionOptions.add_external_initializers``; ORT's optimiser then sees ordinary
constant initializers and still fuses QuantizeLinear/DequantizeLinear/Conv into
QLinearConv (export checks the optimised graph of the packed files, as for int8 ones).

Layout of a packed tensor (``bits`` = 2 or 4, ``per = 8 // bits`` values per byte):

- the tensor's int8 values in C order, each stored as the unsigned ``v + 2**(bits - 1)``
  (offset binary: 2-bit -2..1 -> 0..3, 4-bit -8..7 -> 0..15);
- value ``j`` of the flat array goes to byte ``j // per``, bits
  ``[(j % per) * bits, (j % per + 1) * bits)``: little-endian within a byte, the first
  value in the lowest bits;
- a tensor starts on a byte boundary; the unused high bits of its last byte are zero;
- tensors follow each other in the file at the ``offset`` the manifest gives.

The manifest's ``weight_storage`` says which storage a bundle uses (docs/BUNDLE.md):
``{"format": "packed-int2-int4", "unpacked_at": "load", "packed_files": {file: {...,
"tensors": [{name, bits, shape, dtype, offset, nbytes}]}}, "graphs": {onnx file: [{file,
prefix}]}}`` or ``{"format": "int8", ...}`` (jetson: TensorRT parses the ONNX file itself
and has no way to take initializers from the side, so jetson bundles keep int8).
"""
from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from edgempir.errors import EdgempirError
from edgempir.validate import read_json

PACKED_FORMAT = "packed-int2-int4"
INT8_FORMAT = "int8"
FORMATS = (PACKED_FORMAT, INT8_FORMAT)
PACK_BITS = (2, 4)
PACKED_SUFFIX = ".packed.bin"
LAYOUT = ("int8 value v stored as the unsigned v + 2**(bits-1) in `bits` bits; values in C "
          "order, little-endian within a byte (the first value in the lowest bits); each "
          "tensor starts on a byte boundary at its offset")


class PackingError(ValueError):
    """Values that do not fit the bit width, or a packed table that does not add up."""


def container_bits(weight_bits: int | None) -> int | None:
    """The packed width for a member's weight bits: 2 for 1-2 bits, 4 for 3-4, else None."""
    if weight_bits is None:
        return None
    for b in PACK_BITS:
        if weight_bits <= b:
            return b
    return None


def value_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def packed_nbytes(count: int, bits: int) -> int:
    return -(-int(count) * int(bits) // 8)


def unpack(data: np.ndarray | bytes, bits: int, count: int) -> np.ndarray:
    """uint8 bytes -> ``count`` int8 values (the inverse of :func:`edgempir.targets.host.pack.pack`)."""
    if bits not in PACK_BITS:
        raise PackingError(f"cannot unpack {bits}-bit values; packed widths are {PACK_BITS}")
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) \
        else np.asarray(data, dtype=np.uint8).ravel()
    need = packed_nbytes(count, bits)
    if buf.size != need:
        raise PackingError(f"{count} values of {bits} bits need {need} bytes, got {buf.size}")
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty((need, per), dtype=np.uint8)
    for j in range(per):
        np.bitwise_and(buf >> np.uint8(j * bits), mask, out=out[:, j])
    vals = out.reshape(-1)[:count]
    # in place, no second array: uint8 arithmetic wraps, so u - 2**(bits-1) read as int8
    # is the signed value (two's complement)
    np.subtract(vals, np.uint8(1 << (bits - 1)), out=vals)
    return vals.view(np.int8)


# --------------------------------------------------------------------------- manifest table
def int8_storage(reason: str) -> dict:
    """``weight_storage`` of a bundle that keeps int8 initializers in its ONNX files."""
    return {"format": INT8_FORMAT, "unpacked_at": None, "reason": reason,
            "packed_files": {}, "graphs": {}, "bytes": {"packed": 0, "unpacked": 0}}


def check_storage(storage, files: dict | None = None) -> list[str]:
    """Problems with a manifest's ``weight_storage`` (empty list: fine).

    ``files`` (the manifest's sha256 table) must list every packed file, so the sha256
    check covers it.
    """
    if storage is None:
        return []      # bundles written before packed storage: int8 initializers
    if not isinstance(storage, dict):
        return ["weight_storage is not an object"]
    fmt = storage.get("format")
    if fmt not in FORMATS:
        return [f"weight_storage.format {fmt!r} is unknown (known: {', '.join(FORMATS)})"]
    packed = storage.get("packed_files", {})
    graphs = storage.get("graphs", {})
    if not isinstance(packed, dict) or not isinstance(graphs, dict):
        return ["weight_storage.packed_files and .graphs must be objects"]
    if fmt == INT8_FORMAT:
        return [] if not packed and not graphs else \
            ["weight_storage.format is int8 but it lists packed files"]
    problems = []
    if storage.get("unpacked_at") != "load":
        problems.append("weight_storage.unpacked_at must be 'load'")
    for rel, entry in packed.items():
        where = f"weight_storage.packed_files[{rel!r}]"
        if files is not None and rel not in files:
            problems.append(f"{rel} is used but has no sha256 in the manifest")
        if not isinstance(entry, dict) or not isinstance(entry.get("tensors"), list) or \
                not _is_int(entry.get("bytes")):
            problems.append(f"{where} needs 'bytes' and a list 'tensors'")
            continue
        end = 0
        for k, t in enumerate(entry["tensors"]):
            bad = _check_tensor(t)
            if bad:
                problems.append(f"{where}.tensors[{k}]: {bad}")
                continue
            if t["offset"] < end:
                problems.append(f"{where}.tensors[{k}] overlaps the tensor before it")
            end = t["offset"] + t["nbytes"]
        if end > entry["bytes"]:
            problems.append(f"{where}: tensors end at byte {end}, the file has {entry['bytes']}")
    for graph, sources in graphs.items():
        if files is not None and graph not in files:
            problems.append(f"{graph} is used but has no sha256 in the manifest")
        if not isinstance(sources, list):
            problems.append(f"weight_storage.graphs[{graph!r}] is not a list")
            continue
        for s in sources:
            if not isinstance(s, dict) or s.get("file") not in packed or \
                    not isinstance(s.get("prefix"), str):
                problems.append(f"weight_storage.graphs[{graph!r}] names a packed file the "
                                "manifest does not describe")
    return problems


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_tensor(t) -> str | None:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
        return "needs a name"
    if t.get("bits") not in PACK_BITS:
        return f"bits {t.get('bits')!r} not in {PACK_BITS}"
    if t.get("dtype") != "int8":
        return "dtype must be int8"
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return "shape must be a list of sizes"
    if not _is_int(t.get("offset")) or t["offset"] < 0 or not _is_int(t.get("nbytes")):
        return "offset and nbytes must be integers"
    if t["nbytes"] != packed_nbytes(math.prod(shape), t["bits"]):
        return f"nbytes {t['nbytes']} is not what shape {shape} at {t['bits']} bits needs"
    return None


# --------------------------------------------------------------------------- loading
def external_initializers(root: str | os.PathLike, storage: dict | None, graph: str
                          ) -> dict[str, np.ndarray]:
    """Initializer name -> int8 array for the graph file ``graph`` (relative to ``root``).

    Empty for int8 bundles and for graphs without packed weights. The bytes must have been
    verified (``verify_bundle`` checks every sha256) before this is called.
    """
    if not storage or storage.get("format") != PACKED_FORMAT:
        return {}
    root = Path(root)
    out: dict[str, np.ndarray] = {}
    for src in storage.get("graphs", {}).get(graph, []):
        rel = src["file"]
        entry = storage["packed_files"][rel]
        blob = np.fromfile(root.joinpath(*PurePosixPath(rel).parts), dtype=np.uint8)
        if blob.size != entry["bytes"]:
            raise PackingError(f"{rel} has {blob.size} bytes, the manifest says "
                               f"{entry['bytes']}")
        for t in entry["tensors"]:
            count = math.prod(t["shape"])
            a = unpack(blob[t["offset"]:t["offset"] + t["nbytes"]], t["bits"], count)
            out[src["prefix"] + t["name"]] = a.reshape(t["shape"])
    return out


def find_bundle_storage(model_path: str | os.PathLike) -> tuple[Path, dict, str] | None:
    """For an ONNX file inside a bundle: (bundle root, weight_storage, the file's relative
    path), when that bundle stores packed weights; else None.

    Lets a plain ``make_session(BUNDLE/members/0-w2a4.onnx)`` open a packed file; the
    sha256 checks are ``verify_bundle``'s job, as for every other file.
    """
    p = Path(model_path).resolve()
    for root in list(p.parents)[:2]:
        m = root / "manifest.json"
        if not m.is_file():
            continue
        try:  # bounded like every manifest read (edgempir/validate.py)
            manifest = read_json(m)
        except (OSError, EdgempirError):
            return None
        if not isinstance(manifest, dict) or manifest.get("schema") != "edgempir.bundle":
            continue
        storage = manifest.get("weight_storage")
        rel = p.relative_to(root).as_posix()
        if isinstance(storage, dict) and storage.get("format") == PACKED_FORMAT and \
                rel in storage.get("graphs", {}):
            return root, storage, rel
        return None
    return None
