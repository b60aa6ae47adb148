"""Fuzzing the readers with hypothesis, for a bounded time in CI.

Each reader gets random and mutated input and must either return a valid object or raise
an EdgempirError (the CLI prints it as one line, exit 2); any other exception is a bug.
Examples are derandomized (the same every run, so CI is stable) and few enough for about
30 s in all; ``EDGEMPIR_FUZZ_EXAMPLES=5000 pytest tests/reliability/test_fuzz.py`` explores
more locally. A failure found here is kept as an ``@example`` (or a plain test in
test_hostile.py), so it is checked on every run from then on.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgempir.errors import BundleError, DataError, EdgempirError, RunDirError

_MORE = int(os.environ.get("EDGEMPIR_FUZZ_EXAMPLES", "0"))


def fuzz(n: int):
    return settings(max_examples=_MORE or n, deadline=None, derandomize=not _MORE,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ----------------------------------------------------------------- JSON mutations
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) |
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) |
    st.sampled_from(["", "..", "../x", "/etc/passwd", "members/0-w2a4.onnx", "ensemble.onnx",
                     "calib/clean.npz", "onnxruntime", "tensorrt", "0" * 64]),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8)


def _mutate(data, doc):
    """One random edit somewhere in ``doc`` (in place): replace a value, drop a key, add a
    key or shorten a list. The path is drawn step by step, so deep fields are reached."""
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        action = data.draw(st.sampled_from(["replace", "drop", "add", "truncate"]))
        if action == "replace" or (action == "truncate" and not isinstance(child, list)):
            node[key] = data.draw(json_values)
        elif action == "drop" and isinstance(node, dict):
            del node[key]
        elif action == "add" and isinstance(node, dict):
            node[data.draw(st.text(max_size=10))] = data.draw(json_values)
        elif action == "truncate":
            del child[data.draw(st.integers(0, len(child))):]
        else:
            node[key] = data.draw(json_values)
        return
    node_value = data.draw(json_values)  # an empty container: fill it
    if isinstance(node, dict):
        node["k"] = node_value
    else:
        node.append(node_value)


def _dump(doc) -> str:
    return json.dumps(doc, allow_nan=True)


# ----------------------------------------------------------------- bundle manifest
@pytest.fixture(scope="module")
def fuzz_bundle(x86_bundle, tmp_path_factory) -> tuple[Path, dict]:
    b = tmp_path_factory.mktemp("fuzz-bundle") / "b"
    shutil.copytree(x86_bundle, b)
    return b, json.loads((b / "manifest.json").read_text())


@fuzz(250)
@given(data=st.data())
def test_fuzz_bundle_manifest(fuzz_bundle, data):
    from edgempir.targets.device.bundle import Bundle, verify_bundle

    b, base = fuzz_bundle
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(data, doc)
    (b / "manifest.json").write_text(_dump(doc))
    try:
        bundle = verify_bundle(b)
    except BundleError as e:
        assert "\n" not in str(e)
        return
    # accepted: everything bench reads next has the type it expects
    assert isinstance(bundle, Bundle)
    assert all(isinstance(s, int) and s > 0 for s in bundle.input_shape)
    assert 0 <= bundle.reference_member < len(bundle.members)
    assert bundle.ensemble_file.is_file()
    for acc in bundle.host_accuracy.values():
        assert acc is None or 0.0 <= acc <= 1.0


# ----------------------------------------------------------------- run manifest
@pytest.fixture(scope="module")
def fuzz_run(synthetic_run, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("fuzz-run") / "run"
    shutil.copytree(synthetic_run, run, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    return run, json.loads((run / "manifest.json").read_text())


@fuzz(300)
@given(data=st.data())
def test_fuzz_run_manifest(fuzz_run, data):
    from edgempir.rundir import member_specs, read_manifest

    run, base = fuzz_run
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(data, doc)
    (run / "manifest.json").write_text(_dump(doc))
    try:
        manifest = read_manifest(run)
        specs = member_specs(manifest)
    except EdgempirError as e:  # RunDirError, or SpecError for a spec that does not parse
        assert "\n" not in str(e)
        return
    assert len(specs) == len(manifest["members"])
    for m in manifest["members"]:
        assert (run / m["file"]).resolve().is_relative_to(run.resolve())


@fuzz(60)
@given(text=st.text(max_size=200))
@example(text="[" * 50_000)  # deeper than the JSON parser's stack: was a RecursionError
def test_fuzz_run_manifest_text(scratch, text):
    from edgempir.rundir import read_manifest

    run = scratch / "textrun"
    run.mkdir(exist_ok=True)
    (run / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(RunDirError):
        read_manifest(run)


# ----------------------------------------------------------------- IDX
_IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]


@st.composite
def idx_files(draw) -> bytes:
    ndim = draw(st.integers(0, 5))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2 ** 32 - 1)),
                         min_size=ndim, max_size=ndim))
    head = bytes([0, 0, draw(st.sampled_from(_IDX_CODES)), ndim]) + \
        b"".join(struct.pack(">I", d) for d in dims)
    body = draw(st.binary(max_size=400))
    data = head + body
    if draw(st.booleans()):
        import gzip

        data = gzip.compress(data, mtime=0)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
    return data


@fuzz(600)
@given(data=st.one_of(st.binary(max_size=300), idx_files()))
@example(data=bytes([0, 0, 8, 4]) + struct.pack(">4I", *[65536] * 4))  # int64 wrap: ValueError
# a zero dimension beside huge ones: numpy's "array is too big" ValueError (found in CI)
@example(data=bytes([0, 0, 8, 4]) + struct.pack(">4I", 0, 1 << 29, 1 << 29, 1 << 29))
def test_fuzz_idx(scratch, data):
    from edgempir.data import read_idx

    path = scratch / "fuzz-idx"
    path.write_bytes(data)
    try:
        arr = read_idx(path)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(arr, np.ndarray) and 1 <= arr.ndim <= 4


# ----------------------------------------------------------------- npz sets
def _npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.bool_, np.int32, "<U3", ">f4"]


@st.composite
def npz_files(draw) -> bytes:
    if draw(st.booleans()):  # arrays of random names, dtypes and shapes
        arrays = {}
        for name in draw(st.lists(st.sampled_from(["input", "label", "index", "eps", "x"]),
                                  max_size=4, unique=True)):
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
            dtype = draw(st.sampled_from(_DTYPES))
            values = draw(st.sampled_from([0.0, 0.5, 1.0, -1.0, 2.0, float("nan"), 7]))
            arrays[name] = np.full(shape, values).astype(dtype) if dtype != "<U3" else \
                np.full(shape, "abc")
        data = _npz(arrays)
    else:  # a valid set, then bytes flipped and/or cut
        data = _npz({"input": np.full((2, 1, 3, 3), 0.25, np.float32),
                     "label": np.array([0, 1], np.int64)})
    data = bytearray(data)
    for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                             st.integers(0, 255)), max_size=4)):
        data[pos] = byte
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def _bare_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    return buf.getvalue()


def _zip_with_raw_member() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("input", b"\0" * 16)
        z.writestr("label.npy", _bare_npy())
    return buf.getvalue()


@fuzz(400)
@given(data=npz_files(), shape=st.sampled_from([None, (1, 3, 3)]),
       classes=st.sampled_from([None, 2, 10]))
@example(data=_bare_npy(), shape=None, classes=None)  # ndarray has no __enter__: TypeError
@example(data=_zip_with_raw_member(), shape=None, classes=None)  # bytes, no .dtype
def test_fuzz_npz(scratch, data, shape, classes):
    from edgempir.calib import read_set

    path = scratch / "fuzz.npz"
    path.write_bytes(data)
    try:
        arrays = read_set(path, shape, classes)
    except BundleError as e:
        assert "\n" not in str(e)
        return
    x, y = arrays["input"], arrays["label"]
    assert x.dtype == np.float32 and x.ndim == 4 and y.dtype == np.int64
    assert y.shape == (x.shape[0],)
    assert not x.size or (np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1)
    if classes is not None:
        assert not y.size or (0 <= y.min() and y.max() < classes)


# ----------------------------------------------------------------- target profiles
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else
                                                 ("inf" if v > 0 else "-inf"))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _toml(doc: dict) -> str:
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


_PROFILE_KEYS = {None: ["name", "description", "runtime", "extra"],
                 "export": ["opset", "passes", "graph_rules", "integer_kernels", "x"],
                 "onnxruntime": ["providers", "graph_optimization_level", "intra_op_threads",
                                 "inter_op_threads"],
                 "tensorrt": ["versions", "min_batch", "opt_batch", "max_batch",
                              "workspace_mib", "builder_optimization_level", "tf32"],
                 "validation": ["min_agreement"], "bogus": ["a"]}
toml_values = st.recursive(
    st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1) | st.floats() | st.text(max_size=8) |
    st.sampled_from(["onnxruntime", "tensorrt", "all", "tensorrt-qdq", "CPUExecutionProvider"]),
    lambda c: st.lists(c, max_size=3), max_leaves=5)


@st.composite
def profiles(draw) -> str:
    doc = {}
    for table, keys in _PROFILE_KEYS.items():
        if table is not None and not draw(st.booleans()):
            continue
        section = {k: draw(toml_values) for k in keys if draw(st.booleans())}
        if table is None:
            doc.update(section)
        else:
            doc[table] = section
    return _toml(doc)


@fuzz(500)
@given(text=st.one_of(profiles(), st.text(alphabet="[]=\"'.,{}#\n abcdefgnrtu0123456789-_",
                                          max_size=120)))
def test_fuzz_profile(scratch, text):
    from edgempir.targets.device.profile import ProfileError
    from edgempir.targets.host.profiles import load_profile

    path = scratch / "board.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        profile = load_profile(path)
    except ProfileError as e:
        assert "\n" not in str(e)
        return
    assert profile["runtime"] in ("onnxruntime", "tensorrt")
    assert isinstance(profile["export"]["opset"], int)


# ----------------------------------------------------------------- issue 15: numbers, nesting,
# oversized headers
@fuzz(150)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                       st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e999",
                                        "0x1p3", "1_0", " 0.5 ", "", "NaN"]),
                       st.text(max_size=8)))
def test_fuzz_finite_option_type(value):
    """Every number an option takes is finite and inside its range, or a usage error."""
    import click

    from edgempir.validate import Finite

    for kind in (Finite(0, 1, lo_open=True), Finite(0, 1e6), Finite(None, None)):
        try:
            v = kind.convert(value, None, None)
        except click.BadParameter as e:
            assert "\n" not in str(e)
            continue
        assert math.isfinite(v)
        assert kind.lo is None or v >= kind.lo and not (kind.lo_open and v == kind.lo)
        assert kind.hi is None or v <= kind.hi


@st.composite
def nested_json_text(draw) -> str:
    """JSON text nested 0..400 deep (lists and objects), with leaves that may be NaN,
    Infinity or overflowing floats, and sometimes cut short."""
    depth = draw(st.integers(0, 400))
    leaf = draw(st.sampled_from(["1", "0.5", "NaN", "Infinity", "-Infinity", "1e999", '"s"',
                                 "null", "[]", "{}"]))
    opens = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    text = leaf
    for is_dict in reversed(opens):
        text = '{"k": ' + text + "}" if is_dict else "[" + text + "]"
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))]
    return text


@fuzz(100)
@given(text=nested_json_text())
@example(text="[" * 100_000)
@example(text='{"a": ' * 70 + "1" + "}" * 70)
def test_fuzz_json_reader_depth_and_numbers(text):
    from edgempir.validate import MAX_JSON_DEPTH, check_depth, loads_json

    try:
        obj = loads_json(text, "fuzz.json")
    except EdgempirError as e:
        assert "\n" not in str(e)
        return
    check_depth(obj, "parsed", max_depth=MAX_JSON_DEPTH)  # never deeper than the bound
    assert "NaN" not in json.dumps(obj) and "Infinity" not in json.dumps(obj)


_HUGE_DESCRS = ["<f4", "<f8", "|u1", "<i8", "|V1048576", "|O", "<U1000000", "|S9", "<c16",
                [("a", "<f4")]]


@fuzz(80)
@given(descr=st.sampled_from(_HUGE_DESCRS),
       shape=st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2 ** 40)), max_size=4),
       body=st.integers(0, 64))
def test_fuzz_npz_oversized_headers(scratch, descr, shape, body):
    """Headers that promise up to petabytes, or dtypes no set has: refused from the header
    (a BundleError), never allocated."""
    from numpy.lib import format as npformat

    from edgempir.calib import read_set

    header = io.BytesIO()
    npformat.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                             "shape": tuple(shape)})
    path = scratch / "oversized.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input.npy", header.getvalue() + bytes(body))
        z.writestr("label.npy", header.getvalue())
    try:
        read_set(path)
    except BundleError as e:
        assert "\n" not in str(e)
        return
    raise AssertionError("a set from these headers cannot be valid")


@fuzz(80)
@given(dims=st.lists(st.integers(1, 2 ** 31), min_size=1, max_size=4),
       zeros=st.integers(0, 1 << 16), gz=st.booleans())
def test_fuzz_idx_oversized_headers(scratch, dims, zeros, gz):
    """An IDX header promising anything up to the caps over a small body, raw or gzip'ed:
    refused before the promised bytes are allocated."""
    import gzip

    from edgempir.data import read_idx

    data = bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + \
        bytes(zeros)
    path = scratch / "oversized-idx"
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    try:
        arr = read_idx(path)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert arr.size == math.prod(dims) == zeros
