"""The npz set reader (calib/npz.py) at each of its boundaries, fast and numpy-only: the
test selection that mutation testing (scripts/mutation.sh) runs against calib/npz.py.

Every check of read_set is seen accepting the last valid value and refusing the first
invalid one, so an off-by-one or a dropped check fails here.
"""
from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from edgempir.calib import npz as calib_npz
from edgempir.calib import read_set, write_set
from edgempir.errors import BundleError


def _set(n=3, shape=(1, 4, 4), value=0.5, labels=None):
    x = np.full((n, *shape), value, np.float32)
    y = np.arange(n, dtype=np.int64) if labels is None else np.asarray(labels)
    return x, y


def _raw(path, **arrays):
    """An npz written by numpy directly (no checks), for hostile or odd contents."""
    np.savez(path, **arrays)
    return path


def _refused(path, needle, *args):
    with pytest.raises(BundleError) as e:
        read_set(path, *args)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg
    return msg


def test_round_trip_keeps_values_dtypes_and_extras(tmp_path):
    x, y = _set()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0            # both ends of the range are valid
    write_set(tmp_path / "s.npz", x, y.astype(np.int32), clean_index=np.array([4, 5, 6]))
    s = read_set(tmp_path / "s.npz", (1, 4, 4), 3)
    assert s["input"].dtype == np.float32 and s["label"].dtype == np.int64
    np.testing.assert_array_equal(s["input"], x)
    np.testing.assert_array_equal(s["label"], y)
    np.testing.assert_array_equal(s["clean_index"], [4, 5, 6])
    assert sorted(s) == ["clean_index", "input", "label"]
    with zipfile.ZipFile(tmp_path / "s.npz") as z:          # compressed, keyed by input name
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
        assert sorted(z.namelist()) == ["clean_index.npy", "input.npy", "label.npy"]


def test_unsigned_labels_are_read_as_int64(tmp_path):
    x, _ = _set()
    s = read_set(_raw(tmp_path / "u.npz", input=x, label=np.array([0, 1, 2], np.uint8)))
    assert s["label"].dtype == np.int64 and s["label"].tolist() == [0, 1, 2]


def test_an_empty_set_is_readable(tmp_path):
    x, y = np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64)
    write_set(tmp_path / "e.npz", x, y)
    s = read_set(tmp_path / "e.npz", (1, 4, 4), 10)
    assert s["input"].shape == (0, 1, 4, 4) and s["label"].shape == (0,)


@pytest.mark.parametrize("x, y, what", [
    (np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64), "3-d x"),
    (np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64), "label count"),
    (np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 1), np.int64), "2-d labels"),
    (np.zeros((3, 1, 4, 4), np.float32), np.zeros(2, np.int64), "fewer labels"),
    (np.zeros((2, 1, 1, 4, 4), np.float32), np.zeros(2, np.int64), "5-d x"),
])
def test_write_set_refuses_bad_shapes(tmp_path, x, y, what):
    with pytest.raises(ValueError, match="set needs x"):
        write_set(tmp_path / "w.npz", x, y)
    assert not (tmp_path / "w.npz").exists()


def test_missing_arrays(tmp_path):
    x, y = _set()
    msg = _refused(_raw(tmp_path / "a.npz", input=x), "needs arrays 'input' and 'label'")
    assert "['input']" in msg
    _refused(_raw(tmp_path / "b.npz", label=y), "needs arrays")


@pytest.mark.parametrize("x", [np.zeros((3, 1, 4, 4), np.float64),
                               np.zeros((3, 1, 4, 4), np.float16),
                               np.zeros((3, 1, 4, 4), np.uint8),
                               np.zeros((3, 16), np.float32),
                               np.zeros((3, 1, 1, 4, 4), np.float32)])
def test_inputs_must_be_float32_nchw(tmp_path, x):
    _refused(_raw(tmp_path / "x.npz", input=x, label=np.zeros(3, np.int64)),
             "must be float32 [N, C, H, W]")


def test_input_shape_is_checked_when_given(tmp_path):
    x, y = _set()
    write_set(tmp_path / "s.npz", x, y)
    read_set(tmp_path / "s.npz", [1, 4, 4])                 # a list is the same shape
    _refused(tmp_path / "s.npz", "inputs have shape [1, 4, 4] but the model takes [1, 4, 5]",
             (1, 4, 5))
    _refused(tmp_path / "s.npz", "but the model takes [3, 4, 4]", (3, 4, 4))
    _refused(tmp_path / "s.npz", "but the model takes [1, 4, 3]", (1, 4, 3))   # smaller


@pytest.mark.parametrize("y", [np.zeros(3, np.float32), np.zeros(2, np.int64),
                               np.zeros((3, 1), np.int64), np.array([True, False, True])])
def test_labels_must_be_one_integer_per_image(tmp_path, y):
    x, _ = _set()
    _refused(_raw(tmp_path / "y.npz", input=x, label=y), "must be 3 integer labels")


@pytest.mark.parametrize("value", [-1e-7, 1.0000001, np.nan, np.inf, -np.inf])
def test_inputs_outside_the_unit_range_or_not_finite(tmp_path, value):
    x, y = _set()
    x[2, 0, 3, 3] = value                                   # one bad pixel, the last one
    _refused(_raw(tmp_path / "r.npz", input=x, label=y), "finite and in [0, 1]")


@pytest.mark.parametrize("labels, ok", [([0, 1, 9], True), ([0, 1, 10], False), ([0, 12, 1], False),
                                        ([0, -1, 2], False), ([9, 9, 9], True)])
def test_labels_within_the_class_count(tmp_path, labels, ok):
    x, _ = _set()
    path = _raw(tmp_path / "l.npz", input=x, label=np.array(labels, np.int64))
    if ok:
        assert read_set(path, None, 10)["label"].tolist() == labels
    else:
        assert "labels outside 0..9" in _refused(path, "labels outside", None, 10)
    read_set(path)                                          # no class count: not judged


def test_not_found_unreadable_and_not_a_zip(tmp_path):
    _refused(tmp_path / "none.npz", "file not found")
    (tmp_path / "dir.npz").mkdir()
    _refused(tmp_path / "dir.npz", "cannot be read (Is a directory)")   # strerror, short
    x, y = _set()
    np.save(tmp_path / "bare.npy", x)
    _refused(tmp_path / "bare.npy", "not a zip archive")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"input": x, "label": y}))
    _refused(tmp_path / "p.npz", "not a zip archive")
    (tmp_path / "empty.npz").write_bytes(b"")
    _refused(tmp_path / "empty.npz", "not a zip archive")


def test_an_empty_zip_is_a_zip_without_arrays(tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w"):
        pass                                                # starts with PK\x05\x06
    assert (tmp_path / "z.npz").read_bytes()[:4] == b"PK\x05\x06"
    _refused(tmp_path / "z.npz", "needs arrays")


def test_a_non_npy_member_or_a_pickled_array_is_refused(tmp_path):
    x, y = _set()
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as z:
        z.writestr("input.npy", _npy(x))
        z.writestr("label.npy", _npy(y))
        z.writestr("run.py", "print('hello')")
    assert "'run.py' is not a .npy array" in _refused(tmp_path / "m.npz", "not a .npy array")
    _raw(tmp_path / "o.npz", input=x, label=y, extra=np.array([{"a": 1}], dtype=object))
    _refused(tmp_path / "o.npz", "has dtype |O")  # refused from its header, never unpickled


def _npy(a: np.ndarray, version=None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version)
    return buf.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_both_npy_header_versions_are_read(tmp_path, version):
    x, y = _set()
    with zipfile.ZipFile(tmp_path / "v.npz", "w") as z:
        z.writestr("input.npy", _npy(x, version))
        z.writestr("label.npy", _npy(y, version))
    np.testing.assert_array_equal(read_set(tmp_path / "v.npz")["input"], x)


def test_an_unknown_or_broken_npy_header_is_refused(tmp_path):
    x, y = _set()
    v3 = bytearray(_npy(x, (3, 0)))
    with zipfile.ZipFile(tmp_path / "h.npz", "w") as z:
        z.writestr("input.npy", bytes(v3))
        z.writestr("label.npy", _npy(y))
    msg = _refused(tmp_path / "h.npz", "has no readable .npy header")
    assert "'input.npy'" in msg and "version (3, 0)" in msg
    with zipfile.ZipFile(tmp_path / "g.npz", "w") as z:
        z.writestr("input.npy", b"garbage")
        z.writestr("label.npy", _npy(y))
    _refused(tmp_path / "g.npz", "has no readable .npy header")


def test_a_header_version_below_one_is_refused(tmp_path):
    """Versions other than 1.0 and 2.0 are refused, older ones too (not read as 1.0)."""
    x, y = _set()
    old = bytearray(_npy(x, (1, 0)))
    old[6:8] = bytes([0, 9])                                # a valid 1.0 header, says 0.9
    with zipfile.ZipFile(tmp_path / "o.npz", "w") as z:
        z.writestr("input.npy", bytes(old))
        z.writestr("label.npy", _npy(y))
    assert "version (0, 9)" in _refused(tmp_path / "o.npz", "no readable .npy header")


@pytest.mark.parametrize("where", ["load", "header"])
def test_a_multi_line_library_error_gives_its_first_line(tmp_path, monkeypatch, where):
    """The one-line promise holds whatever numpy or zipfile say: their first line only."""
    x, y = _set()
    write_set(tmp_path / "s.npz", x, y)

    def fail(*args, **kwargs):
        raise ValueError("the first line\nthe second line")
    if where == "load":
        monkeypatch.setattr(np, "load", fail)
    else:
        monkeypatch.setattr(np.lib.format, "read_magic", fail)
    msg = _refused(tmp_path / "s.npz", "(the first line)")
    assert "second" not in msg


def test_the_size_limit_is_one_gib():
    assert calib_npz.MAX_SET_BYTES == 1 << 30


def test_a_truncated_set_is_refused(tmp_path):
    x, y = _set(n=50)
    write_set(tmp_path / "s.npz", x, y)
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "t.npz", "not a readable npz set")


def test_the_size_limit_counts_every_array_before_loading(tmp_path, monkeypatch):
    x, y = _set(n=4)                                # 4 * 16 float32 + 4 int64 = 288 bytes
    write_set(tmp_path / "s.npz", x, y)
    monkeypatch.setattr(calib_npz, "MAX_SET_BYTES", 288)
    read_set(tmp_path / "s.npz")                    # exactly at the limit: fine
    monkeypatch.setattr(calib_npz, "MAX_SET_BYTES", 287)
    msg = _refused(tmp_path / "s.npz", "a set may have")
    assert "[4]" in msg and "label.npy" in msg      # the array that crossed it
    monkeypatch.setattr(calib_npz, "MAX_SET_BYTES", 255)  # the first array alone
    assert "[4, 1, 4, 4]" in _refused(tmp_path / "s.npz", "a set may have")
