"""The bundle format: what ``export`` writes on the host and ``bench`` reads on the device.

A bundle is a directory (docs/BUNDLE.md has every field)::

    manifest.json            schema, target profile (copied in full), input, members, files
    ensemble.onnx            members + vote in one graph: outputs class_ids, member_logits
    members/<i>-<spec>.onnx  one file per member, for diagnostics
    calib/calibration.npz    calibration set (training images)
    calib/clean.npz          clean evaluation subset (test images eval used)
    calib/adv-adaptive.npz   adversarial examples made on the host by eval's adaptive protocol
    engines/                 TensorRT engines + timing cache, built on the device (not hashed;
                             engines/engines.json describes them)

This module runs on the device (Python 3.10, numpy only): no torch, no onnx package.
:func:`verify_bundle` checks the schema, the types, that every listed path stays inside
the bundle and the sha256 of every listed file *before* anything is loaded.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgempir.errors import BundleError
from edgempir.fsutil import sha256_file

BUNDLE_SCHEMA = "edgempir.bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENSEMBLE_FILE = "ensemble.onnx"
ENGINES_DIR = "engines"
CALIB_NAMES = ("calibration", "clean", "adv-adaptive")
RUNTIMES = ("onnxruntime", "tensorrt")
ENSEMBLE_OUTPUTS = ("class_ids", "member_logits")
MEMBER_OUTPUT = "logits"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; refuse to parse absurd files

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def member_relpath(index: int, spec: str) -> str:
    return f"members/{index}-{spec}.onnx"


def calib_relpath(name: str) -> str:
    return f"calib/{name}.npz"


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
    reference_member: int
    fp32_member: int | None
    ensemble_file: Path
    host_accuracy: dict = field(default_factory=dict)
    eval_info: dict = field(default_factory=dict)

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

    @property
    def engines_dir(self) -> Path:
        return self.path / ENGINES_DIR

    def member_name(self, i: int) -> str:
        m = self.members[i]
        return f"{m['index']}-{m['spec']}"


# ------------------------------------------------------------------ validation helpers
def _fail(path: Path, msg: str) -> BundleError:
    return BundleError(f"bundle {path}: {msg}; re-export it with 'edgempir export'")


def _need(d: dict, key: str, types, where: str, path: Path):
    if not isinstance(d, dict) or key not in d:
        raise _fail(path, f"manifest lacks {where}{key!r}")
    value = d[key]
    # bool is an int in Python; a manifest that says true where a count belongs is wrong
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(path, f"manifest field {where}{key!r} has the wrong type")
    if not isinstance(value, types):
        raise _fail(path, f"manifest field {where}{key!r} has the wrong type "
                          f"({type(value).__name__})")
    return value


def safe_relpath(bundle: Path, rel: Any) -> Path:
    """Resolve a manifest path, refusing anything that could leave the bundle."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise _fail(bundle, f"file path {rel!r} is not a plain relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or rel.startswith("/"):
        raise _fail(bundle, f"file path {rel!r} points outside the bundle")
    full = bundle.joinpath(*p.parts)
    # a symlink inside the bundle could still point outside it
    try:
        real = full.resolve(strict=False)
        root = bundle.resolve(strict=False)
    except OSError:
        raise _fail(bundle, f"file path {rel!r} cannot be resolved") from None
    if root != real and root not in real.parents:
        raise _fail(bundle, f"file path {rel!r} points outside the bundle (symlink)")
    return full


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory; export one with "
                          "'edgempir export RUN --target TARGET --out DIR'")
    mpath = path / MANIFEST
    try:
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise _fail(path, f"{MANIFEST} is {size} bytes, too large to be a manifest")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is not a bundle ({MANIFEST} missing); export one with "
                          "'edgempir export RUN --target TARGET --out DIR'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"{MANIFEST} is not valid JSON ({e})") from None
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
    files = _need(manifest, "files", dict, "", path)
    if not files:
        raise _fail(path, "manifest lists no files")
    out = {}
    for rel, digest in files.items():
        full = safe_relpath(path, rel)
        if not isinstance(digest, str) or not _SHA_RE.match(digest):
            raise _fail(path, f"sha256 of {rel} is not a hex digest")
        if rel == MANIFEST or PurePosixPath(rel).parts[0] == ENGINES_DIR:
            raise _fail(path, f"{rel} must not be in the file list")
        if not full.is_file():
            raise BundleError(f"bundle {path}: {rel} is missing; copy the whole bundle directory "
                              "or re-export it")
        actual = sha256_file(full)
        if actual != digest:
            raise BundleError(f"bundle {path}: {rel} does not match its sha256 in the manifest "
                              "(modified or corrupt); copy the bundle again or re-export it")
        out[rel] = full
    return out


def verify_bundle(path: str | os.PathLike) -> Bundle:
    """Verify schema, types, paths and every sha256; then return a :class:`Bundle`."""
    path = Path(path)
    manifest = read_manifest(path)
    target = _need(manifest, "target", str, "", path)
    runtime = _need(manifest, "runtime", str, "", path)
    if runtime not in RUNTIMES:
        raise _fail(path, f"runtime {runtime!r} is unknown (known: {', '.join(RUNTIMES)})")
    profile = _need(manifest, "profile", dict, "", path)
    inp = _need(manifest, "input", dict, "", path)
    input_name = _need(inp, "name", str, "input.", path)
    shape = _need(inp, "shape", list, "input.", path)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                  for s in shape):
        raise _fail(path, f"input.shape {shape!r} is not [C, H, W]")
    num_classes = _need(manifest, "num_classes", int, "", path)
    class_names = _need(manifest, "class_names", list, "", path)
    if num_classes < 2 or len(class_names) != num_classes or \
            not all(isinstance(c, str) for c in class_names):
        raise _fail(path, "num_classes and class_names disagree")
    members = _need(manifest, "members", list, "", path)
    if len(members) < 1:
        raise _fail(path, "manifest lists no members")
    for i, m in enumerate(members):
        where = f"members[{i}]."
        if _need(m, "index", int, where, path) != i:
            raise _fail(path, f"{where}index is not {i}")
        _need(m, "spec", str, where, path)
        _need(m, "weight_bits", int, where, path)
        _need(m, "act_bits", int, where, path)
        _need(m, "file", str, where, path)
        wb = _need(m, "weight_bytes", dict, where, path)
        for k in ("true_bits", "stored", "float32"):
            _need(wb, k, int, where + "weight_bytes.", path)
    reference = _need(manifest, "reference_member", int, "", path)
    if not 0 <= reference < len(members):
        raise _fail(path, f"reference_member {reference} is not a member index")
    fp32 = manifest.get("fp32_member")
    if fp32 is not None and (not isinstance(fp32, int) or isinstance(fp32, bool)
                             or not 0 <= fp32 < len(members)):
        raise _fail(path, f"fp32_member {fp32!r} is not a member index")
    ensemble_rel = _need(manifest, "ensemble_file", str, "", path)
    calib = _need(manifest, "calib", dict, "", path)
    for name, entry in calib.items():
        _need(entry, "file", str, f"calib.{name}.", path)
    host_accuracy = _need(manifest, "host_accuracy", dict, "", path)
    eval_info = _need(manifest, "eval_info", dict, "", path)

    listed = verify_files(path, manifest)
    referenced = [ensemble_rel] + [m["file"] for m in members] + \
        [e["file"] for e in calib.values()]
    for rel in referenced:
        if rel not in listed:
            raise _fail(path, f"{rel} is used but has no sha256 in the manifest")

    return Bundle(path=path, manifest=manifest, profile=profile, target=target, runtime=runtime,
                  input_name=input_name, input_shape=tuple(shape), num_classes=num_classes,
                  class_names=list(class_names), members=members, reference_member=reference,
                  fp32_member=fp32, ensemble_file=path / ensemble_rel,
                  host_accuracy=host_accuracy, eval_info=eval_info)


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
