"""The bundle format: what ``export`` writes on the host and ``bench`` reads on the device.

A bundle is a directory (docs/BUNDLE.md has every field)::

    manifest.json            schema, target profile (copied in full), input, members, files
    ensemble.onnx            members + vote in one graph: outputs class_ids, member_logits
    members/<i>-<spec>.onnx  one file per member, for diagnostics
    calib/calibration.npz    calibration set (training images)
    calib/clean.npz          clean evaluation subset (test images eval used)
    calib/adv-adaptive.npz   adversarial examples made on the host by eval's adaptive protocol

TensorRT engines are built on the device into a cache outside the bundle
(``edgempir.targets.device.tensorrt.engine_cache_dir``); an ``engines/`` folder is never listed.

This module runs on the device (Python 3.10, numpy only): no torch, no onnx package.
:func:`verify_bundle` checks the schema, the types, that every listed path stays inside
the bundle and the sha256 of every listed file *before* anything is loaded. The checks of
single fields (and the one-line errors) are in ``manifest_checks.py``, what an ONNX file
may contain in ``onnx_check.py``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgempir.contract import check_member_table, member_stem
from edgempir.errors import BundleError, SpecError
from edgempir.fsutil import sha256_file, show_path
from edgempir.members import MemberSpec
from edgempir.targets.device import packing
from edgempir.targets.device.manifest_checks import (
    REEXPORT,
    check_keys,
    check_profile,
    check_vote_execution,
    fail,
    need,
    reject_fields,
    safe_relpath,
    short,
)
from edgempir.targets.device.onnx_check import check_graph
from edgempir.targets.device.runtime import RUNTIME_NAMES as RUNTIMES
from edgempir.validate import read_json

BUNDLE_SCHEMA = "edgempir.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENSEMBLE_FILE = "ensemble.onnx"
ENGINES_DIR = "engines"
CALIB_NAMES = ("calibration", "clean", "adv-adaptive")
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; refuse to parse absurd files
MAX_INPUT_ELEMENTS = 1 << 24   # C*H*W of one image: bench allocates batches of them
MAX_ONNX_BYTES = 256 << 20     # one ONNX file: EMPIR's graphs are a few MB; checked by stat
MAX_BITS = 32

# Every key a manifest may have at the top level, per member and in ``input``
# (docs/BUNDLE.md). Unknown keys are refused, so a manifest from a foreign or newer writer
# is never half understood: a key that export starts writing must be added here.
MANIFEST_KEYS = frozenset({
    "schema", "schema_version", "created", "target", "runtime", "profile", "input", "outputs",
    "dataset", "arch", "num_classes", "class_names", "combiner", "vote", "reference_member",
    "fp32_member", "ensemble_file", "ensemble_optimized_ops", "members", "calib",
    "host_accuracy", "host_accuracy_how", "eval_info", "validation", "source_run", "versions",
    "export_seconds", "files", "weight_storage", "reject_policy", "host_rejection",
    "vote_execution"})
MEMBER_KEYS = frozenset({
    "index", "spec", "weight_bits", "act_bits", "file", "parameters", "weight_bytes", "layers",
    "optimized_ops", "integer_kernels", "passes", "host_clean_accuracy_run"})
INPUT_KEYS = frozenset({"name", "shape", "dtype", "range", "batch", "layout"})

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def member_relpath(index: int, spec: str) -> str:
    return f"members/{member_stem(index, spec)}.onnx"


@dataclass
class Bundle:
    """A verified bundle. Paths are absolute; ``manifest`` is the parsed manifest.json."""

    path: Path
    manifest: dict
    profile: dict
    target: str
    runtime: str
    input_name: str
    input_shape: tuple
    num_classes: int
    class_names: list
    members: list
    specs: list[MemberSpec]
    reference_member: int
    fp32_member: int | None
    ensemble_file: Path
    host_accuracy: dict = field(default_factory=dict)
    eval_info: dict = field(default_factory=dict)
    #: the ``accepted`` output's rule (docs/BUNDLE.md); None for bundles exported before it
    reject_policy: str | None = None
    host_rejection: dict = field(default_factory=dict)

    def member_file(self, i: int) -> Path:
        if not isinstance(i, int) or not 0 <= i < len(self.members):
            raise BundleError(f"bundle {self.path} has members 0..{len(self.members) - 1}, "
                              f"not {i!r}; pick one of those")
        return self.path / self.members[i]["file"]

    def calib_file(self, name: str) -> Path:
        sets = self.manifest.get("calib", {})
        if name not in sets:
            raise BundleError(f"bundle {self.path} has no calibration set {name!r}; it has "
                              f"{', '.join(sorted(sets)) or 'none'}")
        return self.path / sets[name]["file"]



def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory; export one with "
                          "'edgempir export RUN --target TARGET --out DIR'")
    mpath = path / MANIFEST
    try:  # bytes capped before reading, depth bounded, NaN refused (edgempir.validate)
        manifest = read_json(mpath, error=BundleError, hint=REEXPORT,
                             max_bytes=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{show_path(path)} is not a bundle ({MANIFEST} missing); export one "
                          "with 'edgempir export RUN --target TARGET --out DIR'") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{mpath} is not an edgempir bundle manifest (schema "
                          f"{manifest.get('schema') if isinstance(manifest, dict) else None!r}, "
                          f"expected {BUNDLE_SCHEMA!r})")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle {path} has schema version {version!r}; this edgempir reads "
                          f"version {SCHEMA_VERSION}: re-export it with this version")
    return manifest


def verify_files(path: Path, manifest: dict) -> dict[str, Path]:
    """Check every listed file's path and sha256; return {relpath: absolute path}."""
    files = need(manifest, "files", dict, "", path)
    if not files:
        raise fail(path, "manifest lists no files")
    out = {}
    for rel, digest in files.items():
        full = safe_relpath(path, rel)
        if not isinstance(digest, str) or not _SHA_RE.match(digest):
            raise fail(path, f"sha256 of {rel} is not a hex digest")
        if rel == MANIFEST or PurePosixPath(rel).parts[0] == ENGINES_DIR:
            raise fail(path, f"{rel} must not be in the file list")
        if not full.is_file():
            raise BundleError(f"bundle {show_path(path)}: {rel} is missing; copy the whole "
                              "bundle directory or re-export it")
        if rel.endswith(".onnx"):
            check_onnx_size(path, rel, full)
        actual = sha256_file(full)
        if actual != digest:
            raise BundleError(f"bundle {path}: {rel} does not match its sha256 in the manifest "
                              "(modified or corrupt); copy the bundle again or re-export it")
        out[rel] = full
    return out


def verify_bundle(path: str | os.PathLike) -> Bundle:
    """Verify schema, types, paths and every sha256; then return a :class:`Bundle`.

    The fields are checked in manifest order, each by a small function; nothing is opened
    by a runtime before every file's sha256 and every ONNX file's contents passed."""
    path = Path(path)
    manifest = read_manifest(path)
    check_keys(path, manifest, MANIFEST_KEYS, "")
    target = need(manifest, "target", str, "", path)
    runtime = need(manifest, "runtime", str, "", path)
    if runtime not in RUNTIMES:
        raise fail(path, f"runtime {runtime!r} is unknown (known: {', '.join(RUNTIMES)})")
    profile = need(manifest, "profile", dict, "", path)
    check_profile(path, profile, runtime)
    input_name, shape = _check_input(path, manifest)
    num_classes = need(manifest, "num_classes", int, "", path)
    class_names = need(manifest, "class_names", list, "", path)
    if num_classes < 2 or len(class_names) != num_classes or \
            not all(isinstance(c, str) for c in class_names):
        raise fail(path, "num_classes and class_names disagree")
    members = _check_members(path, manifest)
    reference, specs, fp32 = _check_roles(path, manifest, members)
    ensemble_rel = need(manifest, "ensemble_file", str, "", path)
    calib = need(manifest, "calib", dict, "", path)
    check_keys(path, calib, frozenset(CALIB_NAMES), "calib.")
    for name, entry in calib.items():
        need(entry, "file", str, f"calib.{name}.", path)
    host_accuracy = _check_host_accuracy(path, manifest)
    eval_info = need(manifest, "eval_info", dict, "", path)
    reject_policy, host_rejection = reject_fields(path, manifest)
    _check_files_and_graphs(path, manifest, [ensemble_rel] + [m["file"] for m in members],
                            [e["file"] for e in calib.values()])
    return Bundle(path=path, manifest=manifest, profile=profile, target=target, runtime=runtime,
                  input_name=input_name, input_shape=tuple(shape), num_classes=num_classes,
                  class_names=list(class_names), members=members, specs=specs,
                  reference_member=reference,
                  fp32_member=fp32, ensemble_file=path / ensemble_rel,
                  host_accuracy=host_accuracy, eval_info=eval_info,
                  reject_policy=reject_policy, host_rejection=host_rejection)


def _check_input(path: Path, manifest: dict) -> tuple[str, list]:
    inp = need(manifest, "input", dict, "", path)
    check_keys(path, inp, INPUT_KEYS, "input.")
    input_name = need(inp, "name", str, "input.", path)
    shape = need(inp, "shape", list, "input.", path)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                  for s in shape):
        raise fail(path, f"input.shape {short(shape)} is not [C, H, W]")
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_ELEMENTS:  # bench would allocate batches
        raise fail(path, f"input.shape {shape} has more than {MAX_INPUT_ELEMENTS} elements "
                         "per image")
    return input_name, shape


def _check_members(path: Path, manifest: dict) -> list:
    members = need(manifest, "members", list, "", path)
    if len(members) < 1:
        raise fail(path, "manifest lists no members")
    for i, m in enumerate(members):
        where = f"members[{i}]."
        if need(m, "index", int, where, path) != i:
            raise fail(path, f"{where}index is not {i}")
        check_keys(path, m, MEMBER_KEYS, where)
        need(m, "spec", str, where, path)
        for key in ("weight_bits", "act_bits"):
            if not 1 <= need(m, key, int, where, path) <= MAX_BITS:
                raise fail(path, f"{where}{key} is not a bit width 1..{MAX_BITS}")
        need(m, "file", str, where, path)
        wb = need(m, "weight_bytes", dict, where, path)
        for k in ("true_bits", "stored", "float32"):
            need(wb, k, int, where + "weight_bytes.", path)
    return members


def _check_roles(path: Path, manifest: dict, members: list
                 ) -> tuple[int, list[MemberSpec], int | None]:
    """The reference member, the typed specs and the fp32 member; the vote's execution."""
    reference = need(manifest, "reference_member", int, "", path)
    if not 0 <= reference < len(members):
        raise fail(path, f"reference_member {reference} is not a member index")
    try:  # the spec strings the device runs by, typed and checked against the bit widths
        specs = check_member_table(members, reference)
    except SpecError as e:
        raise fail(path, str(e)) from None
    fp32 = manifest.get("fp32_member")
    if fp32 is not None and (not isinstance(fp32, int) or isinstance(fp32, bool)
                             or not 0 <= fp32 < len(members)):
        raise fail(path, f"fp32_member {fp32!r} is not a member index")
    check_vote_execution(path, manifest.get("vote_execution"), len(members), reference)
    return reference, specs, fp32


def _check_host_accuracy(path: Path, manifest: dict) -> dict:
    host_accuracy = need(manifest, "host_accuracy", dict, "", path)
    for name, acc in host_accuracy.items():
        # bench compares the device with these and writes them into its JSON report
        if acc is not None and (not isinstance(acc, (int, float)) or isinstance(acc, bool)
                                or not 0.0 <= acc <= 1.0):
            raise fail(path, f"host_accuracy.{name} = {short(acc)} is not a fraction in [0, 1]")
    return host_accuracy


def _check_files_and_graphs(path: Path, manifest: dict, graphs: list[str],
                            sets: list[str]) -> None:
    """The weight storage table, every listed file's sha256, every used file listed, and
    every graph a runtime may open checked (onnx_check.py)."""
    # packed 2/4-bit weights (targets/device/packing.py): the table must add up, and every packed
    # file must be in ``files`` so its sha256 is checked like every other file's
    storage = manifest.get("weight_storage")
    storage_problems = packing.check_storage(storage, files=need(manifest, "files", dict, "",
                                                                 path))
    if storage_problems:
        raise fail(path, storage_problems[0])
    listed = verify_files(path, manifest)
    referenced = graphs + sets + \
        (list(storage.get("packed_files", {})) if isinstance(storage, dict) else [])
    for rel in referenced:
        if rel not in listed:
            raise fail(path, f"{rel} is used but has no sha256 in the manifest")
    # every graph a runtime may open, whatever its name says, and every listed .onnx file
    for rel in sorted({*graphs, *(rel for rel in listed if rel.endswith(".onnx"))}):
        check_onnx_file(path, rel, listed)


def check_onnx_size(bundle: Path, rel: str, full: Path) -> None:
    """Refuse an ONNX file larger than MAX_ONNX_BYTES, from its size on disk, before it is
    hashed or read: a matching sha256 says the file is the one listed, not that it is small
    (an unknown protobuf field can carry gigabytes)."""
    size = full.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise fail(bundle, f"{rel} is {size} bytes, more than the {MAX_ONNX_BYTES} an ONNX "
                            "file of a bundle may have")


def check_onnx_file(bundle: Path, rel: str, listed: dict[str, Path]) -> None:
    """Refuse an ONNX file of the bundle with custom domains or functions, ops off the
    allow-list, subgraphs, absurd tensors, or external data that is not a hashed file of
    the bundle: before ONNX Runtime or TensorRT parses it (onnx_check.py)."""
    try:
        check_onnx_size(bundle, rel, listed[rel])
        data = memoryview(listed[rel].read_bytes())
    except OSError as e:
        raise fail(bundle, f"{rel} cannot be read ({e.strerror or e})") from None
    check_graph(bundle, rel, listed, data)


# ------------------------------------------------------------------ writing (host side)
def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest and engines/, sorted."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] == ENGINES_DIR:
            continue
        dirs.sort()
        for name in sorted(names):
            rel = (rel_dir / name).as_posix()
            if rel == MANIFEST:
                continue
            out[rel] = sha256_file(Path(dirpath) / name)
    return dict(sorted(out.items()))


def write_manifest(root: Path, manifest: dict) -> dict:
    """Fill ``files`` with the sha256 of everything in ``root`` and write manifest.json."""
    from edgempir.fsutil import atomic_write_json

    manifest = dict(manifest)
    manifest["schema"] = BUNDLE_SCHEMA
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["files"] = hash_files(root)
    atomic_write_json(root / MANIFEST, manifest)
    return manifest
