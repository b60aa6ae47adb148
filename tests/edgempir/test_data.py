"""Readers of IDX, CIFAR-10 batches and synthetic data; every corrupt case is a DataError."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from edgempir.data import load_dataset, read_idx, synthetic
from edgempir.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.tobytes()


def write_mnist(folder, n_train=20, n_test=10, gz=True,
                rng=np.random.default_rng(0)):  # noqa: B008 - one stream across calls, on purpose
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in parts.items():
        data = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    parts = write_mnist(tmp_path / "mnist", gz=gz)
    ds = load_dataset("mnist", tmp_path)  # a parent folder holding mnist/ is accepted
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_train.dtype == np.uint8
    assert np.array_equal(ds.x_train[:, 0], parts["train-images-idx3-ubyte"])
    assert np.array_equal(ds.y_test, parts["t10k-labels-idx1-ubyte"])
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10


def test_env_var_gives_the_folder(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setenv("EDGEMPIR_DATA", str(tmp_path))
    assert load_dataset("fashion-mnist").x_test.shape[0] == 10


def test_missing_files_name_them_and_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "dataset-fashion-mnist" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("damage", ["bad_magic", "truncated_body", "truncated_gz", "label_count",
                                    "label_range", "empty"])
def test_corrupt_idx(tmp_path, damage):
    write_mnist(tmp_path, gz=True)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    lbl = tmp_path / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    if damage == "bad_magic":
        img.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    elif damage == "truncated_body":
        img.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "truncated_gz":
        img.write_bytes(img.read_bytes()[:-30])
    elif damage == "label_count":
        lbl.write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    elif damage == "label_range":
        lbl.write_bytes(gzip.compress(idx_bytes(np.full(20, 12, np.uint8))))
    elif damage == "empty":
        img.write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    assert "\n" not in str(e.value)


def test_read_idx_rejects_absurd_header(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 10**6, 28, 28) + b"\0" * 50)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(p)


def write_cifar_python(folder, n=10,
                       rng=np.random.default_rng(1)):  # noqa: B008 - one stream across calls
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar_python_batches(tmp_path):
    write_cifar_python(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    assert ds.class_names[0] == "airplane"


def test_cifar_binary_batches(tmp_path):
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (tmp_path / name).write_bytes(rec.tobytes())
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32)
    (tmp_path / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="3073"):
        load_dataset("cifar10", tmp_path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_cifar_pickle_payload_is_refused_and_not_run(tmp_path, monkeypatch):
    write_cifar_python(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_cifar_garbage(tmp_path):
    write_cifar_python(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DataError):
        load_dataset("cifar10", tmp_path)


def test_synthetic_is_deterministic_and_learnable_shape():
    a, b = synthetic(), synthetic()
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert a.x_train.dtype == np.uint8 and a.input_shape == (1, 28, 28)
    assert len(np.unique(a.y_train)) == 10


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("imagenet")
