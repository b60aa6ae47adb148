"""Host side: the three sets a bundle carries (npz keyed by the model's input name).

- ``calibration``: images drawn (seeded) from the training split, for runtimes that
  calibrate or tune on data; never the test images.
- ``clean``: the test images ``eval`` attacked (the adversarial set's ``index`` array), so
  that clean and adversarial accuracy on the device are measured on the same images as on
  the host.
- ``adv-adaptive``: the adversarial examples ``eval``'s adaptive protocol made on the host
  (RUN/eval/adv-adaptive.npz), copied with their ``index`` and ``eps`` arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgempir.calib.npz import INPUT_NAME, LABEL_NAME, read_set, write_set
from edgempir.errors import BundleError, RunDirError

ADV_FILE = "adv-adaptive.npz"


def read_adversarial(run: Path, input_shape, num_classes: int) -> dict:
    path = Path(run) / "eval" / ADV_FILE
    if not path.is_file():
        raise RunDirError(f"{run} has no eval/{ADV_FILE}; run 'edgempir eval {run}' first (the "
                          "bundle carries the adaptive protocol's adversarial examples)")
    try:
        arrays = read_set(path, input_shape, num_classes)
    except BundleError as e:  # the reader speaks of bundles: reword for a run directory
        raise RunDirError(f"{path}: {str(e).split(': ', 1)[-1]}".replace(
            "re-export the bundle", f"rerun 'edgempir eval {run}'")) from None
    return arrays


def snap_to_pixel_grid(x_adv: np.ndarray, clean_uint8: np.ndarray, eps: float) -> np.ndarray:
    """Move adversarial images onto the k/255 grid without leaving the eps ball.

    Why: PGD ends at clean +- eps, and eps = 0.1 puts a pixel exactly halfway between two
    8-bit levels (0.1 * 255 = 25.5). Whether the input quantizer rounds such a tie up or
    down depends on how a runtime computes x / scale (37% of the pixels of one real set);
    on the grid every runtime reads the same levels, and a camera delivers such images.
    """
    clean = clean_uint8.astype(np.float32)
    levels = np.round(x_adv.astype(np.float64) * 255.0)
    budget = eps * 255.0 + 1e-6
    step_back = np.abs(levels - clean) > budget
    levels = np.where(step_back, levels - np.sign(levels - clean), levels)
    return (np.clip(levels, 0, 255) / 255.0).astype(np.float32)


def build_sets(data, adv: dict, out_dir: Path, *, n_calib: int = 512, seed: int = 0) -> dict:
    """Write calibration.npz, clean.npz and adv-adaptive.npz into ``out_dir``.

    ``data`` is an :class:`edgempir.data.Dataset`; returns {name: {"file", "n", "source"}}.
    """
    from edgempir.data import to_float

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_calib = min(n_calib, len(data.x_train))
    pick = np.sort(rng.choice(len(data.x_train), size=n_calib, replace=False))
    write_set(out_dir / "calibration.npz", to_float(data.x_train[pick]), data.y_train[pick],
              index=pick.astype(np.int64))

    x_adv, y_adv = adv[INPUT_NAME], adv[LABEL_NAME]
    if "index" in adv:
        index = np.asarray(adv["index"]).astype(np.int64)
        if index.shape != (len(x_adv),) or index.min(initial=0) < 0 or \
                index.max(initial=0) >= len(data.x_test):
            raise RunDirError("eval/adv-adaptive.npz: its 'index' array does not index the test "
                              "split of this data set; rerun 'edgempir eval'")
        if not np.array_equal(data.y_test[index], y_adv):
            raise RunDirError("eval/adv-adaptive.npz: labels disagree with the test images its "
                              "'index' names (another data set?); rerun 'edgempir eval'")
        clean_source = "test images eval attacked (adv-adaptive index)"
    else:
        index = np.arange(len(x_adv), dtype=np.int64)
        clean_source = "first test images (adv set has no index)"
    write_set(out_dir / "clean.npz", to_float(data.x_test[index]), data.y_test[index],
              index=index)
    extra = {k: np.asarray(v) for k, v in adv.items() if k not in (INPUT_NAME, LABEL_NAME)}
    adv_source = ("adversarial examples made on the host by eval's adaptive protocol "
                  "(RUN/eval/adv-adaptive.npz)")
    if "index" in adv and "eps" in adv and data.x_test.dtype == np.uint8:
        x_adv = snap_to_pixel_grid(x_adv, data.x_test[index], float(np.asarray(adv["eps"])))
        adv_source += ", snapped onto the 8-bit pixel grid inside the eps ball"
    write_set(out_dir / ADV_FILE, x_adv, y_adv, **extra)
    return {
        "calibration": {"file": "calib/calibration.npz", "n": int(n_calib),
                        "source": f"training images (seed {seed})"},
        "clean": {"file": "calib/clean.npz", "n": len(index), "source": clean_source},
        "adv-adaptive": {"file": f"calib/{ADV_FILE}", "n": len(x_adv), "source": adv_source},
    }
