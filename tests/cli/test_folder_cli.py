"""`--dataset folder` through the command line: a generated image folder (10 classes x 12
PNGs of 32 px, two of them corrupt) trains with DataLoader workers, then evaluates and
exports like any run."""
import json

import numpy as np
import pytest
import testkit as H
from PIL import Image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c in range(10):
            folder = root / split / f"sign{c}"
            folder.mkdir(parents=True)
            base = rng.uniform(0, 255, (1, 1, 3))  # one colour per class: learnable
            for k in range(n):
                img = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{k}.png")
    (root / "train" / "sign0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = (root / "train" / "sign3" / "0.png").read_bytes()
    (root / "train" / "sign3" / "cut.png").write_bytes(good[:200])
    return root


@pytest.fixture(scope="module")
def folder_run(cli, image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "signs"
    proc = cli("train", "--dataset", "folder", "--data-dir", str(image_folder),
               "--image-size", "28", "--arch", "mnist", "--members", "w2a4,fp32",
               "--epochs", "1", "--batch-size", "32", "--workers", "2", "--threads", "1",
               "--out", str(out))
    return out, proc


def test_folder_trains_end_to_end_with_workers(folder_run, image_folder):
    out, proc = folder_run
    assert "2 file(s) of" in proc.stderr and "skipped" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    ds = manifest["dataset"]
    assert ds["name"] == "folder-28px" and ds["input_shape"] == [3, 28, 28]
    assert ds["class_names"] == [f"sign{c}" for c in range(10)]
    assert ds["n_train"] == 120 and ds["n_test"] == 40
    assert {s["path"] for s in ds["folder"]["skipped"]} == {"train/sign0/corrupt.png",
                                                          "train/sign3/cut.png"}
    assert len(ds["fingerprint"]["train"]) == 64
    assert "folder-28px" in proc.stdout  # the training table names the data set


@pytest.mark.slow
def test_folder_run_evaluates_and_exports(cli, folder_run, image_folder, tmp_path):
    """eval and export reopen the folder from the run's data set name and --data-dir, and
    load only the rows they use (16 attacked images, the calibration set)."""
    out, _ = folder_run
    cli("eval", str(out), "--data-dir", str(image_folder), "--config", "quick", "--n", "16",
        "--attacks", "pgd", "--threads", "1")
    report = json.loads((out / "eval" / "adaptive-quick.json").read_text())
    assert report["data"]["check"] == "same data as the run was trained on"
    bundle = tmp_path / "bundle"
    cli("export", str(out), "--target", "x86", "--data-dir", str(image_folder),
        "--out", str(bundle))
    assert (bundle / "ensemble.onnx").is_file()
    # other data (a folder with one more image) is refused, in one line
    extra = image_folder / "val" / "sign1" / "extra.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(extra)
    try:
        proc = cli("eval", str(out), "--data-dir", str(image_folder), "--n", "4",
                   "--attacks", "pgd", "--config", "quick", check=False)
    finally:
        extra.unlink()
    assert proc.returncode == 2 and "differ from the data the run was trained on" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--dataset", "synthetic", "--image-size", "32"], "applies to --dataset folder only"),
    (["--dataset", "folder"], "no --data-dir"),
    (["--dataset", "folder", "--data-dir", "MISSING"], "does not exist"),
])
def test_folder_options_are_checked_in_one_line(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("EDGEMPIR_DATA", raising=False)
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    proc = cli("train", *args, "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


# ----------------------------------------------------------------- 224 px, bench without torch
@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """2 classes x 4 train / 2 val JPEGs of 240x224 px: the ImageNet input size."""
    return H.colour_folder(tmp_path_factory.mktemp("big"), {"train": 4, "val": 2},
                           ((220, 30, 30), (30, 30, 220)), (224, 240), noise=25, seed=1,
                           prefix="k", ext="jpg")


@pytest.mark.slow
def test_alexnet_at_224_px_trains_exports_and_benches_without_torch(cli, big_folder, tmp_path):
    """AlexNet-BN (width 1/16) on 224 px images: train 1 epoch, eval, export x86 (every
    low-bit layer an integer kernel, BatchNorm folded), then ``edgempir bench`` in a process
    where torch, brevitas and onnx cannot be imported."""
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    cli("train", "--dataset", "folder", "--data-dir", str(big_folder), "--image-size", "224",
        "--arch", "alexnet:0.0625", "--members", "w2a2,fp32", "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--threads", "1", "--out", str(run))
    cli("eval", str(run), "--data-dir", str(big_folder), "--config", "quick", "--n", "4",
        "--attacks", "pgd", "--threads", "1")
    cli("export", str(run), "--target", "x86", "--data-dir", str(big_folder), "--n-calib", "8",
        "--out", str(bundle))
    manifest = json.loads((bundle / "manifest.json").read_text())
    low = manifest["members"][0]
    assert low["integer_kernels"] == low["layers"]["quantized"] == 7
    for name in ("clean", "adv-adaptive"):
        rep = manifest["validation"][name]["member_files"]
        assert rep["ensemble"]["agreement"] == 1.0
        assert all(m["agreement"] == 1.0 for m in rep["members"])
    blocked = tmp_path / "no-torch"
    for name in ("torch", "brevitas", "onnx"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    out = tmp_path / "bench.json"
    proc = cli("bench", str(bundle), "--batch-sizes", "1,2", "--repeats", "5", "--warmup", "1",
               "--square-queries", "10", "--square-n", "4", "--no-memory", "--out", str(out),
               env={"PYTHONPATH": str(blocked)})
    report = json.loads(out.read_text())
    assert report["bundle"]["input_shape"] == [3, 224, 224] and proc.returncode == 0
    assert all(row["ensemble"]["p50_ms"] > 0 for row in report["latency"])
