"""Data sets: IDX (MNIST, Fashion-MNIST), CIFAR-10 batches, synthetic data, image folders.

Numpy only. Images come back as uint8 arrays ``[N, C, H, W]``; models take floats in
[0, 1] (``to_float``), and any normalisation lives inside the model. Missing or corrupt
files raise :class:`DataError` naming the expected files and how to get them.

CIFAR-10's python batches are pickles. We never run a user's pickle: the reader uses an
unpickler whose allow-list holds only numpy's array reconstruction, so a file that names
any other callable is rejected before anything runs. The binary batches (``*.bin``) are
read too, and are preferred when both are present.

Image folders (``--dataset folder``, edgempir.datasets.folder) are streamed from disk: their
``x_train`` / ``x_test`` are :class:`~edgempir.datasets.folder.LazyImages` that decode only
the rows they are indexed with. A folder run's manifest names its data set
``folder-<N>px`` (:func:`folder_name`), so that eval and export, which reopen the data set
from that name and ``--data-dir``, resize the images as training did.
"""
from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import math
import os
import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgempir.errors import DataError
from edgempir.fsutil import show_path

DATASETS = ("fashion-mnist", "mnist", "cifar10", "synthetic", "folder")
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_FOLDER_IMAGE_SIZE = 32
_FOLDER_NAME = re.compile(r"folder-([0-9]{1,4})px")


def folder_name(image_size: int) -> str:
    """The data set name a folder run records: the image size travels with it."""
    return f"folder-{image_size}px"


def folder_image_size(name: str) -> int | None:
    """``folder-64px`` -> 64; None for any other name."""
    m = _FOLDER_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def dataset_family(name: str) -> str:
    """``folder-64px`` -> ``folder``; other names unchanged (the key of the tables below)."""
    return "folder" if folder_image_size(name) is not None else name


class _PerFamily(dict):
    """A table keyed by data set family, which also answers for ``folder-<N>px``."""

    def __getitem__(self, name):
        return super().__getitem__(dataset_family(name))

    def get(self, name, default=None):
        return super().get(dataset_family(name), default)

    def __contains__(self, name):
        return super().__contains__(dataset_family(name))


# L-inf budgets used by default for evaluation and adversarial training (inputs in [0, 1]);
# image folders hold natural images, so they get CIFAR-10's and ImageNet's usual 8/255.
DEFAULT_EPS = _PerFamily({"mnist": 0.3, "fashion-mnist": 0.1, "cifar10": 8 / 255,
                          "synthetic": 0.1, "folder": 8 / 255})
# Random horizontal flips keep the label for clothes and CIFAR objects, not for digits. On
# Fashion-MNIST at the default 5 epochs they cost accuracy (fp32 member: 89.75% with flips,
# 90.46% without; README), so only CIFAR-10 gets them by default.
DEFAULT_AUGMENT = _PerFamily({"cifar10": "hflip"})

FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")

SYSTEM_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
    "cifar10": "/usr/share/datasets/cifar10",
}

HOW_TO_GET = {
    "fashion-mnist": "install the Debian package 'dataset-fashion-mnist' (apt-get install "
                     "dataset-fashion-mnist) or pass --data-dir / EDGEMPIR_DATA with the "
                     "Fashion-MNIST IDX files",
    "mnist": "copy the four MNIST IDX files (gz or raw) into a folder and pass it with "
             "--data-dir or EDGEMPIR_DATA",
    "cifar10": "unpack cifar-10-python.tar.gz (or cifar-10-binary.tar.gz) and pass the "
               "folder with --data-dir or EDGEMPIR_DATA",
}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # uint8 [N, C, H, W]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the files came from
    # image folders only: image size, layout and the files left out (edgempir.datasets.folder)
    folder: dict | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


FINGERPRINT_HOW = ("sha256 over dtype, shape and bytes of the images (uint8 [N, C, H, W]) "
                   "then the labels (int64 [N]) of the split, as loaded")


def data_fingerprint(data: Dataset) -> dict[str, str]:
    """sha256 of each split as loaded (raw or gzip files give the same), so that a run can
    tell that it is being evaluated or exported on other data than it was trained on."""
    import hashlib

    def digest(*arrays: np.ndarray) -> str:
        h = hashlib.sha256()
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{list(a.shape)}".encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    from edgempir.datasets.folder import FINGERPRINT_HOW as FOLDER_HOW
    from edgempir.datasets.folder import LazyImages

    if isinstance(data.x_train, LazyImages) and isinstance(data.x_test, LazyImages):
        # a streamed set is never read whole: its fingerprint is the sorted file list's
        return {"how": FOLDER_HOW, "train": data.x_train.split.fingerprint(),
                "test": data.x_test.split.fingerprint()}
    return {"how": FINGERPRINT_HOW,
            "train": digest(data.x_train, data.y_train.astype(np.int64)),
            "test": digest(data.x_test, data.y_test.astype(np.int64))}


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


# ---------------------------------------------------------------- IDX (MNIST family)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


MAX_IDX_BYTES = 1 << 30  # 1 GiB per file: MNIST's train images are 47 MB, EMNIST's 0.55 GB
# A gzip'ed IDX file may promise at most this many times its own size (plus GZIP_SLACK):
# MNIST compresses ~5:1, Fashion-MNIST ~2:1; a 0.76 MB file promising 10**6 images is a
# bomb, refused before a byte is inflated.
MAX_GZIP_RATIO = 100
GZIP_SLACK = 1 << 20


def _idx_header(data: bytes, path: Path, how_to_get: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an IDX header; a DataError if it is not one or is absurd."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{show_path(path)}: not an IDX file (bad magic number); {how_to_get}")
    ndim = data[3]
    if ndim == 0 or ndim > 4 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{show_path(path)}: IDX header is truncated or has {ndim} dimensions; "
                        f"{how_to_get}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if 0 in shape:
        # an empty set is no data set, and numpy refuses shapes like (0, 2**29, 2**29)
        raise DataError(f"{show_path(path)}: IDX header claims shape {shape}, which holds no "
                        f"images (corrupt file); {how_to_get}")
    # Python ints: numpy's int64 product wraps around for dims like 65536**4
    if math.prod(shape) * dtype.itemsize > MAX_IDX_BYTES:
        raise DataError(f"{show_path(path)}: IDX header claims shape {shape}, more than "
                        f"{MAX_IDX_BYTES >> 30} GiB (corrupt or hostile file); {how_to_get}")
    return shape, dtype


def _read_header(stream) -> bytes:
    head = stream.read(4)
    if len(head) == 4 and 0 < head[3] <= 4:
        head += stream.read(4 * head[3])
    return head


def _read_body(stream, size: int) -> tuple[np.ndarray, int]:
    """``size`` bytes into one preallocated buffer (no copies); returns it and the count read."""
    out = np.empty(size, dtype=np.uint8)
    view, got = memoryview(out), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return out, got


def read_idx(path: str | os.PathLike, how_to_get: str = "re-download the file") -> np.ndarray:
    """Read one IDX file (raw or gzip) into a numpy array, checking magic and sizes.

    Bytes are capped before anything is allocated: the header is read first (magic, then
    shape); a raw file's size must match the header exactly; a gzip may promise at most
    MAX_GZIP_RATIO times its own size and is inflated, as a stream, into one buffer of the
    promised size, and must end exactly there (trailer CRC and length checked).
    """
    path = Path(path)
    gz = False
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            with (gzip.GzipFile(fileobj=f) if gz else contextlib.nullcontext(f)) as stream:
                head = _read_header(stream)
                shape, dtype = _idx_header(head, path, how_to_get)
                expected = math.prod(shape) * dtype.itemsize
                _check_promise(path, shape, expected, len(head), file_size, gz, how_to_get)
                body, got = _read_body(stream, expected)
                extra = bool(stream.read(1))  # past the end: also checks the gzip trailer
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        what = "corrupt or truncated gzip" if gz else "cannot be read"
        reason = getattr(e, "strerror", None) or e
        raise DataError(f"{show_path(path)}: {what} ({reason}); {how_to_get}") from None
    if got != expected or extra:
        holds = f"{got} bytes" if not extra else f"more than {expected} bytes"
        raise DataError(f"{show_path(path)}: IDX header says shape {shape} ({expected} bytes) "
                        f"but the file holds {holds} (truncated or corrupt); {how_to_get}")
    # one writable buffer: torch refuses to wrap read-only ones without a warning
    return body.view(dtype).reshape(shape)


def _check_promise(path: Path, shape, expected: int, head: int, file_size: int, gz: bool,
                   how_to_get: str) -> None:
    """The header's byte count against the file's size, before the body is allocated."""
    if not gz and file_size != head + expected:
        raise DataError(f"{show_path(path)}: IDX header says shape {shape} ({expected} bytes) "
                        f"but the file holds {max(file_size - head, 0)} bytes (truncated or "
                        f"corrupt); {how_to_get}")
    if gz and head + expected > file_size * MAX_GZIP_RATIO + GZIP_SLACK:
        raise DataError(f"{show_path(path)}: IDX header claims shape {shape} ({expected} "
                        f"bytes) from a gzip of {file_size} bytes, more than "
                        f"{MAX_GZIP_RATIO}x its size: truncated or corrupt (or a gzip bomb); "
                        f"{how_to_get}")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_idx_pair(directory: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    how = HOW_TO_GET[name]
    img_stem, lbl_stem = IDX_FILES[split]
    img_path, lbl_path = _find(directory, img_stem), _find(directory, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise DataError(f"{name}: {directory / (missing + '.gz')} not found (expected "
                        f"{', '.join(s + '[.gz]' for s in IDX_FILES['train'] + IDX_FILES['test'])}); {how}")
    images, labels = read_idx(img_path, how), read_idx(lbl_path, how)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} "
                        f"{images.shape}; {how}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lbl_path}: {len(labels)} labels for {len(images)} images; {how}")
    if labels.size and labels.max() >= 10:
        raise DataError(f"{lbl_path}: label {int(labels.max())} is out of range 0..9; {how}")
    return images[:, None, :, :], labels.astype(np.int64)


# ---------------------------------------------------------------- CIFAR-10
try:  # numpy >= 2 moved the reconstruction helper; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except numpy's array reconstruction: nothing else can run."""

    ALLOWED: ClassVar[dict] = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # protocol-2 pickles of arrays carry their bytes as latin-1 text re-encoded by this
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _check_cifar_size(path: Path) -> None:
    """A CIFAR-10 batch is 30 MB; refuse a huge file from its size, before reading it."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{show_path(path)}: cannot be read ({e.strerror or e}); "
                        f"{HOW_TO_GET['cifar10']}") from None
    if size > MAX_IDX_BYTES:
        raise DataError(f"{show_path(path)}: {size} bytes, more than the {MAX_IDX_BYTES} a "
                        f"CIFAR-10 batch may have; {HOW_TO_GET['cifar10']}")


def _read_cifar_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    how = HOW_TO_GET["cifar10"]
    _check_cifar_size(path)
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any malformed pickle is a corrupt file
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e}); {how}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (no dict inside); {how}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: CIFAR-10 batch without 'data' and 'labels'; {how}")
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or \
            labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: CIFAR-10 batch has data {data.dtype} {data.shape} and "
                        f"{labels.shape[0] if labels.ndim else 0} labels; expected uint8 "
                        f"[N, 3072] and N integer labels; {how}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: CIFAR-10 labels outside 0..9; {how}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _check_cifar_size(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of 3073-byte CIFAR-10 "
                        f"records (truncated?); {HOW_TO_GET['cifar10']}")
    rec = raw.reshape(-1, 3073)
    if rec[:, 0].max() > 9:
        raise DataError(f"{path}: CIFAR-10 labels outside 0..9; {HOW_TO_GET['cifar10']}")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), rec[:, 0].astype(np.int64)


def _load_cifar(directory: Path) -> tuple[np.ndarray, ...]:
    for sub in (directory, directory / "cifar-10-batches-bin", directory / "cifar-10-batches-py"):
        bins = [sub / f"data_batch_{i}.bin" for i in range(1, 6)] + [sub / "test_batch.bin"]
        if all(p.is_file() for p in bins):
            parts = [_read_cifar_binary_batch(p) for p in bins]
            break
        pys = [sub / f"data_batch_{i}" for i in range(1, 6)] + [sub / "test_batch"]
        if all(p.is_file() for p in pys):
            parts = [_read_cifar_python_batch(p) for p in pys]
            break
    else:
        raise DataError(f"cifar10: data_batch_1..5 and test_batch (python or .bin) not found "
                        f"under {directory}; {HOW_TO_GET['cifar10']}")
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0], parts[5][1]


# ---------------------------------------------------------------- synthetic
def synthetic(n_train: int = 2000, n_test: int = 500, seed: int = 0, image_size: int = 28,
              channels: int = 1, num_classes: int = 10) -> Dataset:
    """Small learnable data for tests: each class is a fixed random template plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 1, size=(num_classes, channels, image_size, image_size))
    # smooth the templates a little so that conv nets find them easily
    templates = (templates + np.roll(templates, 1, axis=2) + np.roll(templates, 1, axis=3)) / 3

    def make(n, rng):
        y = rng.integers(0, num_classes, size=n)
        x = 0.75 * templates[y] + 0.25 * rng.uniform(0, 1, size=(n,) + templates.shape[1:])
        return np.clip(np.round(x * 255), 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train, np.random.default_rng(seed + 1))
    x_test, y_test = make(n_test, np.random.default_rng(seed + 2))
    return Dataset("synthetic", x_train, y_train, x_test, y_test,
                   tuple(f"class{i}" for i in range(num_classes)), "generated")


# ---------------------------------------------------------------- entry point
def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get("EDGEMPIR_DATA")
    if data_dir is not None:
        d = Path(data_dir)
        # accept either the data set's folder or a parent holding it
        return d / name if (d / name).is_dir() else d
    return Path(SYSTEM_DIRS.get(name, "."))


def load_dataset(name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None) -> Dataset:
    """``image_size``: image folders only (``folder``; ``folder-<N>px`` carries its own)."""
    if name == "folder" or folder_image_size(name) is not None:
        return load_folder(data_dir, image_size or folder_image_size(name)
                           or DEFAULT_FOLDER_IMAGE_SIZE)
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "synthetic":
        return synthetic()
    directory = resolve_data_dir(name, data_dir)
    if not directory.is_dir():
        raise DataError(f"{name}: data folder {directory} does not exist; {HOW_TO_GET[name]}")
    if name == "cifar10":
        x_train, y_train, x_test, y_test = _load_cifar(directory)
        classes = CIFAR_CLASSES
    else:
        x_train, y_train = _load_idx_pair(directory, name, "train")
        x_test, y_test = _load_idx_pair(directory, name, "test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{name}: train images {x_train.shape[1:]} and test images "
                            f"{x_test.shape[1:]} differ in shape; {HOW_TO_GET[name]}")
        classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    return Dataset(name, x_train, y_train, x_test, y_test, classes, str(directory))


MAX_SKIPPED_LISTED = 100  # the manifest lists this many skipped files, then counts the rest


def load_folder(data_dir: str | os.PathLike | None, image_size: int) -> Dataset:
    """An image folder (edgempir.datasets.folder), streamed: only labels are in memory."""
    from edgempir.datasets.folder import HOW, LazyImages, open_folder

    if data_dir is None:
        data_dir = os.environ.get("EDGEMPIR_DATA")
    if data_dir is None:
        raise DataError(f"folder: no --data-dir (or EDGEMPIR_DATA) given; {HOW}")
    root = Path(data_dir)
    train, test, classes = open_folder(root, image_size)
    skipped = [dict(s, split=split.name) for split in (train, test) for s in split.skipped]
    layout = "gtsrb" if any(e.box is not None for e in train.entries) else "imagefolder"
    info = {"image_size": image_size, "layout": layout, "test_split": test.name,
            "skipped_count": len(skipped), "skipped": skipped[:MAX_SKIPPED_LISTED]}
    return Dataset(folder_name(image_size), LazyImages(train), train.labels, LazyImages(test),
                   test.labels, classes, str(root), folder=info)
