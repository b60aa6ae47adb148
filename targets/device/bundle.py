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
the bundle and the sha256 of every listed file *before* anything is loaded.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgempir.contract import VOTE_MODES, check_member_table, member_stem
from edgempir.errors import BundleError, SpecError
from edgempir.fsutil import sha256_file, show_path
from edgempir.members import MemberSpec
from edgempir.targets.device import packing
from edgempir.targets.device.profile import SCHEMA as PROFILE_SCHEMA  # no TOML read on the device
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
MAX_TENSOR_ELEMENTS = 1 << 28  # one ONNX initializer (1 GiB of float32)
MAX_ONNX_BYTES = 256 << 20     # one ONNX file: EMPIR's graphs are a few MB; checked by stat
REEXPORT = "re-export it with 'edgempir export'"
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



# ------------------------------------------------------------------ validation helpers
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _fail(path: Path, msg: str) -> BundleError:
    # manifest keys and names end up in the message: escape control characters, so that a
    # key like "\n" cannot break the one-line error
    msg = _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], msg)
    return BundleError(f"bundle {show_path(path)}: {msg}; {REEXPORT}")


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
    if not isinstance(rel, str) or not rel or "\\" in rel or _CONTROL_RE.search(rel):
        raise _fail(bundle, f"file path {_short(rel)} is not a plain relative path")
    p = PurePosixPath(rel)
    # split by hand: PurePosixPath drops empty parts ("a//b", "a/") and "." parts
    if p.is_absolute() or any(part in ("..", "", ".") for part in rel.split("/")):
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


def _short(value: Any, limit: int = 60) -> str:
    """repr of a manifest value, cut short: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_keys(path: Path, d: dict, known: frozenset, where: str) -> None:
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise _fail(path, f"manifest has unknown key '{where}{unknown[0][:60]}' (this "
                          "edgempir does not know it)")


def _check_profile(path: Path, profile: dict, runtime: str) -> None:
    """The manifest's copy of the target profile, against the same grammar as TOML profiles
    (targets/device/profile.py): the runtime reads its providers, threads and levels from here."""
    for key, value in profile.items():
        if key == "source":
            ok, what = isinstance(value, str), "a string"
        elif key in PROFILE_SCHEMA[None]:
            check, what, _ = PROFILE_SCHEMA[None][key]
            ok = check(value)
        elif key in PROFILE_SCHEMA:
            if not isinstance(value, dict):
                raise _fail(path, f"profile.{key} is not a table")
            for k, v in value.items():
                if k not in PROFILE_SCHEMA[key]:
                    raise _fail(path, f"profile.{key} has unknown key {_short(k)}")
                check, what, _ = PROFILE_SCHEMA[key][k]
                if not check(v):
                    raise _fail(path, f"profile.{key}.{k} = {_short(v)} is invalid; it must "
                                      f"be {what}")
            continue
        else:
            raise _fail(path, f"profile has unknown key {_short(key)}")
        if not ok:
            raise _fail(path, f"profile.{key} = {_short(value)} is invalid; it must be {what}")
    if profile.get("runtime", runtime) != runtime:
        raise _fail(path, f"profile.runtime {_short(profile['runtime'])} differs from runtime "
                          f"{runtime!r}")


def _check_vote_execution(path: Path, execution: Any, n_members: int, reference: int) -> None:
    """``vote_execution`` (absent in bundles from before issue 18: the full vote): a known
    mode, and an order that lists every member once with the reference last."""
    if execution is None:
        return
    if not isinstance(execution, dict) or execution.get("mode") not in VOTE_MODES:
        raise _fail(path, f"vote_execution {_short(execution)} is not an object with a mode "
                          f"({', '.join(VOTE_MODES)})")
    order = execution.get("order")
    if not isinstance(order, list) or sorted(order) != list(range(n_members)) or \
            any(isinstance(i, bool) for i in order) or order[-1] != reference:
        raise _fail(path, f"vote_execution.order {_short(order)} does not list every member "
                          "once with the reference member last")


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
    """Verify schema, types, paths and every sha256; then return a :class:`Bundle`."""
    path = Path(path)
    manifest = read_manifest(path)
    _check_keys(path, manifest, MANIFEST_KEYS, "")
    target = _need(manifest, "target", str, "", path)
    runtime = _need(manifest, "runtime", str, "", path)
    if runtime not in RUNTIMES:
        raise _fail(path, f"runtime {runtime!r} is unknown (known: {', '.join(RUNTIMES)})")
    profile = _need(manifest, "profile", dict, "", path)
    _check_profile(path, profile, runtime)
    inp = _need(manifest, "input", dict, "", path)
    _check_keys(path, inp, INPUT_KEYS, "input.")
    input_name = _need(inp, "name", str, "input.", path)
    shape = _need(inp, "shape", list, "input.", path)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                  for s in shape):
        raise _fail(path, f"input.shape {_short(shape)} is not [C, H, W]")
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_ELEMENTS:  # bench would allocate batches
        raise _fail(path, f"input.shape {shape} has more than {MAX_INPUT_ELEMENTS} elements "
                          "per image")
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
        _check_keys(path, m, MEMBER_KEYS, where)
        _need(m, "spec", str, where, path)
        for key in ("weight_bits", "act_bits"):
            if not 1 <= _need(m, key, int, where, path) <= MAX_BITS:
                raise _fail(path, f"{where}{key} is not a bit width 1..{MAX_BITS}")
        _need(m, "file", str, where, path)
        wb = _need(m, "weight_bytes", dict, where, path)
        for k in ("true_bits", "stored", "float32"):
            _need(wb, k, int, where + "weight_bytes.", path)
    reference = _need(manifest, "reference_member", int, "", path)
    if not 0 <= reference < len(members):
        raise _fail(path, f"reference_member {reference} is not a member index")
    try:  # the spec strings the device runs by, typed and checked against the bit widths
        specs = check_member_table(members, reference)
    except SpecError as e:
        raise _fail(path, str(e)) from None
    fp32 = manifest.get("fp32_member")
    if fp32 is not None and (not isinstance(fp32, int) or isinstance(fp32, bool)
                             or not 0 <= fp32 < len(members)):
        raise _fail(path, f"fp32_member {fp32!r} is not a member index")
    _check_vote_execution(path, manifest.get("vote_execution"), len(members), reference)
    ensemble_rel = _need(manifest, "ensemble_file", str, "", path)
    calib = _need(manifest, "calib", dict, "", path)
    _check_keys(path, calib, frozenset(CALIB_NAMES), "calib.")
    for name, entry in calib.items():
        _need(entry, "file", str, f"calib.{name}.", path)
    host_accuracy = _need(manifest, "host_accuracy", dict, "", path)
    for name, acc in host_accuracy.items():
        # bench compares the device with these and writes them into its JSON report
        if acc is not None and (not isinstance(acc, (int, float)) or isinstance(acc, bool)
                                or not 0.0 <= acc <= 1.0):
            raise _fail(path, f"host_accuracy.{name} = {_short(acc)} is not a fraction in [0, 1]")
    eval_info = _need(manifest, "eval_info", dict, "", path)
    reject_policy, host_rejection = _reject_fields(path, manifest)

    # packed 2/4-bit weights (targets/device/packing.py): the table must add up, and every packed
    # file must be in ``files`` so its sha256 is checked like every other file's
    storage = manifest.get("weight_storage")
    storage_problems = packing.check_storage(storage, files=_need(manifest, "files", dict, "",
                                                                  path))
    if storage_problems:
        raise _fail(path, storage_problems[0])
    listed = verify_files(path, manifest)
    referenced = [ensemble_rel] + [m["file"] for m in members] + \
        [e["file"] for e in calib.values()] + \
        (list(storage.get("packed_files", {})) if isinstance(storage, dict) else [])
    for rel in referenced:
        if rel not in listed:
            raise _fail(path, f"{rel} is used but has no sha256 in the manifest")
    # every graph a runtime may open, whatever its name says, and every listed .onnx file
    models = {ensemble_rel, *(m["file"] for m in members),
              *(rel for rel in listed if rel.endswith(".onnx"))}
    for rel in sorted(models):
        check_onnx_file(path, rel, listed)

    return Bundle(path=path, manifest=manifest, profile=profile, target=target, runtime=runtime,
                  input_name=input_name, input_shape=tuple(shape), num_classes=num_classes,
                  class_names=list(class_names), members=members, specs=specs,
                  reference_member=reference,
                  fp32_member=fp32, ensemble_file=path / ensemble_rel,
                  host_accuracy=host_accuracy, eval_info=eval_info,
                  reject_policy=reject_policy, host_rejection=host_rejection)


def _reject_fields(path: Path, manifest: dict) -> tuple[str | None, dict]:
    """``reject_policy`` (absent in bundles older than the ``accepted`` output) and the
    host's rejection rate per set."""
    from edgempir.vote import REJECT_POLICIES

    if "reject_policy" not in manifest:
        return None, {}
    policy = _need(manifest, "reject_policy", dict, "", path)
    name = _need(policy, "name", str, "reject_policy.", path)
    if name not in REJECT_POLICIES:
        raise _fail(path, f"reject_policy.name {_short(name)} is unknown (known: "
                          f"{', '.join(REJECT_POLICIES)})")
    rates = _need(manifest, "host_rejection", dict, "", path)
    for key, rate in rates.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise _fail(path, f"host_rejection.{key} = {_short(rate)} is not a fraction")
    return name, rates


# ------------------------------------------------------------------ ONNX graph checks
# What a graph may contain before any runtime parses it. The lists are this edgempir's,
# never the bundle's: a manifest cannot widen them. Standard-domain ops only (no custom op
# libraries, no model-local functions), no control flow (subgraphs), and none of the ops
# that allocate a size computed at run time (ConstantOfShape, Expand, Tile, Range, Resize).
# Add an op here when export starts emitting it.
# The early-exit vote (targets/host/graph.py) adds NonZero and ScatterND: their outputs are
# data-dependent in *extent* but bounded by their inputs' (NonZero: at most rank x numel of
# its input's indices; ScatterND: exactly its data input's shape), so no graph input can
# make them allocate more than the batch it was given. ScatterND is allowed only without a
# ``reduction`` attribute (what the exporter writes); the attribute check below refuses it.
ONNX_DOMAINS = ("", "ai.onnx")
ALLOWED_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization",
    "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Cast", "CastLike",
    "Ceil", "Clip", "Concat", "Constant", "Conv", "ConvInteger", "DequantizeLinear", "Div",
    "Dropout", "Equal", "Erf", "Exp", "Flatten", "Floor", "Gather", "GatherElements",
    "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "MatMulInteger", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul",
    "Neg", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "Pow", "QLinearConv",
    "QLinearMatMul", "QuantizeLinear", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceSum", "Relu", "Reshape", "Round", "ScatterND", "Shape", "Sigmoid", "Sign",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "TopK",
    "Transpose", "Unsqueeze", "Where", "Xor"})
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Malformed(Exception):
    """Bytes that are not a protobuf message of the expected shape."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """(field number, wire type, value) of one protobuf message, without a schema: the
    device has no onnx package. Lengths are checked; large byte fields are not copied."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint, pos = _varint(buf, pos)
            value: int | memoryview = varint
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _Malformed(f"field {number} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _Malformed(f"field {number} runs past the end")
            value, pos = buf[pos:pos + width], pos + width
        else:
            raise _Malformed(f"wire type {wire}")
        yield number, wire, value


def _msg(wire: int, value, what: str) -> memoryview:
    if wire != 2:
        raise _Malformed(f"{what} is not a message")
    return value


def _text(wire: int, value, what: str) -> str:
    return bytes(_msg(wire, value, what)).decode("utf-8", "replace")


class _GraphCheck:
    """Walks one ONNX file (ModelProto) and raises a BundleError on the first problem."""

    def __init__(self, bundle: Path, rel: str, listed: dict):
        self.bundle, self.rel, self.listed = bundle, rel, listed
        self.model_dir = PurePosixPath(rel).parent

    def fail(self, msg: str) -> BundleError:
        return _fail(self.bundle, f"{self.rel} {msg}")

    def model(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if number == 8:  # opset_import
                for n, w, v in _fields(_msg(wire, value, "opset_import")):
                    if n == 1 and _text(w, v, "domain") not in ONNX_DOMAINS:
                        raise self.fail(f"imports operator domain {_text(w, v, 'domain')!r}; "
                                        "custom domains are not allowed")
            elif number == 7:
                self.graph(_msg(wire, value, "graph"))
            elif number == 25:
                raise self.fail("defines model-local functions, which are not allowed")
            elif number == 20:
                raise self.fail("carries training graphs, which are not allowed")

    def graph(self, buf: memoryview) -> None:
        for number, wire, value in _fields(buf):
            if number == 1:
                self.node(_msg(wire, value, "node"))
            elif number == 5:
                self.tensor(_msg(wire, value, "initializer"))
            elif number == 15:  # sparse_initializer: values and indices are tensors
                for n, w, v in _fields(_msg(wire, value, "sparse_initializer")):
                    if n in (1, 2):
                        self.tensor(_msg(w, v, "sparse tensor"))

    def node(self, buf: memoryview) -> None:
        op, domain, attributes = "", "", []
        for number, wire, value in _fields(buf):
            if number == 4:
                op = _text(wire, value, "op_type")
            elif number == 7:
                domain = _text(wire, value, "domain")
            elif number == 5:  # checked once op_type is known, whatever the field order
                attributes.append(_msg(wire, value, "attribute"))
        for attribute in attributes:
            self.attribute(attribute, op)
        if domain not in ONNX_DOMAINS:
            raise self.fail(f"uses op {op!r} of custom domain {domain!r}; custom ops are not "
                            "allowed")
        if op not in ALLOWED_OPS:
            raise self.fail(f"uses op {op!r}, which is not on the allow-list of this edgempir "
                            "(targets/device/bundle.py ALLOWED_OPS)")

    def attribute(self, buf: memoryview, op: str) -> None:
        for number, wire, value in _fields(buf):
            if number == 1 and op == "ScatterND" and _text(wire, value, "name") == "reduction":
                raise self.fail("has a ScatterND with a reduction; only plain ScatterND (the "
                                "early-exit vote's scatter) is allowed")
            if number in (6, 11):  # g, graphs
                raise self.fail(f"has a subgraph in op {op!r}; control flow is not allowed")
            if number in (5, 10):  # t, tensors
                self.tensor(_msg(wire, value, "attribute tensor"))
            elif number in (22, 23):  # sparse_tensor(s)
                for n, w, v in _fields(_msg(wire, value, "sparse tensor")):
                    if n in (1, 2):
                        self.tensor(_msg(w, v, "sparse tensor"))

    def tensor(self, buf: memoryview) -> None:
        dims, name, location, external = [], "", None, False
        for number, wire, value in _fields(buf):
            if number == 1:  # dims: packed or one varint each
                if wire == 2:
                    pos = 0
                    while pos < len(value):
                        d, pos = _varint(value, pos)
                        dims.append(d)
                else:
                    dims.append(value)
            elif number == 8:
                name = _text(wire, value, "name")
            elif number == 14 and wire == 0:
                external = external or value == _EXTERNAL
            elif number == 13:
                external = True
                key, val = "", ""
                for n, w, v in _fields(_msg(wire, value, "external_data")):
                    if n == 1:
                        key = _text(w, v, "key")
                    elif n == 2:
                        val = _text(w, v, "value")
                if key == "location":
                    location = val
        count = 1
        for d in dims:
            if d >= 1 << 63:  # a negative int64
                raise self.fail(f"tensor {name!r} has a negative dimension")
            count *= d
        if count > MAX_TENSOR_ELEMENTS:
            raise self.fail(f"tensor {name!r} has shape {dims}, more than "
                            f"{MAX_TENSOR_ELEMENTS} elements")
        if external:
            self.external(name, location)

    def external(self, name: str, location: str | None) -> None:
        """External data must be a file of the bundle whose sha256 was checked."""
        if location is None:
            raise self.fail(f"tensor {name!r} is external data without a location")
        p = PurePosixPath(location)
        if not location or "\\" in location or "\x00" in location or p.is_absolute() \
                or ".." in p.parts:
            raise self.fail(f"tensor {name!r} has external data at {_short(location)}, "
                            "outside the bundle")
        rel = (self.model_dir / p).as_posix()
        if rel not in self.listed:
            raise self.fail(f"tensor {name!r} has external data in {rel}, which has no sha256 "
                            "in the manifest")


def check_onnx_size(bundle: Path, rel: str, full: Path) -> None:
    """Refuse an ONNX file larger than MAX_ONNX_BYTES, from its size on disk, before it is
    hashed or read: a matching sha256 says the file is the one listed, not that it is small
    (an unknown protobuf field can carry gigabytes)."""
    size = full.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise _fail(bundle, f"{rel} is {size} bytes, more than the {MAX_ONNX_BYTES} an ONNX "
                            "file of a bundle may have")


def check_onnx_file(bundle: Path, rel: str, listed: dict[str, Path]) -> None:
    """Refuse an ONNX file of the bundle with custom domains or functions, ops off the
    allow-list, subgraphs, absurd tensors, or external data that is not a hashed file of
    the bundle: before ONNX Runtime or TensorRT parses it."""
    try:
        check_onnx_size(bundle, rel, listed[rel])
        data = memoryview(listed[rel].read_bytes())
    except OSError as e:
        raise _fail(bundle, f"{rel} cannot be read ({e.strerror or e})") from None
    try:
        _GraphCheck(bundle, rel, listed).model(data)
    except _Malformed as e:
        raise _fail(bundle, f"{rel} is not a valid ONNX model ({e})") from None


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
