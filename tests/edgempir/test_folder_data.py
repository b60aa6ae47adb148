"""Image-folder data sets (edgempir.datasets.folder): layout, skipped files, GTSRB crops,
lazy rows for eval and export, the file-list fingerprint, and one-line errors."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from edgempir.data import data_fingerprint, load_dataset
from edgempir.datasets.folder import LazyImages
from edgempir.errors import DataError


def _png(path, color, size=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = color
    Image.fromarray(img).save(path)


def make_folder(root, classes=3, per_class=4, test_dir="val"):
    for split, n in (("train", per_class), (test_dir, 2)):
        for c in range(classes):
            for k in range(n):
                _png(root / split / f"class{c}" / f"{k}.png", (40 * c, 10 * k, 200))
    return root


def truncated_jpeg(path):
    """A JPEG whose header reads but whose pixels do not decode."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_layout_labels_and_resized_rows(tmp_path):
    root = make_folder(tmp_path / "d")
    ds = load_dataset("folder", root, image_size=16)
    assert ds.name == "folder-16px" and ds.class_names == ("class0", "class1", "class2")
    assert ds.input_shape == (3, 16, 16) and len(ds.y_train) == 12 and len(ds.y_test) == 6
    assert list(ds.y_train) == [0] * 4 + [1] * 4 + [2] * 4
    assert isinstance(ds.x_train, LazyImages)
    rows = ds.x_train[np.array([5, 0])]  # only these two are decoded
    assert rows.shape == (2, 3, 16, 16) and rows.dtype == np.uint8
    assert tuple(rows[0][:, 3, 3]) == (40, 10, 200) and tuple(rows[1][:, 0, 0]) == (0, 0, 200)
    assert ds.x_train[1:3].shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="streamed"):
        np.asarray(ds.x_train)
    # the name in the manifest reopens the set at the same size
    again = load_dataset("folder-16px", root)
    assert data_fingerprint(again) == data_fingerprint(ds)


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    root = make_folder(tmp_path / "d", test_dir="test")
    (root / "train" / "class0" / "garbage.png").write_bytes(b"not an image at all")
    good = (root / "train" / "class1" / "0.png").read_bytes()
    (root / "train" / "class1" / "half.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "class1" / "notes.txt").write_text("ignored: not an image name")
    ds = load_dataset("folder", root, image_size=16)
    assert len(ds.y_train) == 12  # both bad files left out
    assert ds.folder["skipped_count"] == 2 and ds.folder["test_split"] == "test"
    reasons = {s["path"]: s["reason"] for s in ds.folder["skipped"]}
    assert set(reasons) == {"train/class0/garbage.png", "train/class1/half.png"}
    assert "not a readable image" in reasons["train/class0/garbage.png"]


def test_an_image_that_does_not_decode_is_a_one_line_error_for_eval_rows(tmp_path):
    root = make_folder(tmp_path / "d")
    truncated_jpeg(root / "val" / "class2" / "z.jpg")  # header fine: passes the scan
    ds = load_dataset("folder", root, image_size=16)
    bad = len(ds.y_test) - 1
    with pytest.raises(DataError, match=r"z\.jpg: the image does not decode") as e:
        ds.x_test[np.array([0, bad])]
    assert "\n" not in str(e.value)


def test_gtsrb_crop_boxes_are_applied(tmp_path):
    root = make_folder(tmp_path / "d", classes=2)
    img = np.zeros((30, 30, 3), dtype=np.uint8)
    img[10:20, 5:15] = (255, 0, 0)  # the sign: the box below
    cls = root / "train" / "class0"
    Image.fromarray(img).save(cls / "00000_00000.ppm")
    (cls / "GT-00000.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
        "00000_00000.ppm;30;30;5;10;14;19;0\n")
    ds = load_dataset("folder", root, image_size=8)
    assert ds.folder["layout"] == "gtsrb"
    i = [e.path for e in ds.x_train.split.entries].index("train/class0/00000_00000.ppm")
    x = ds.x_train[np.array([i])][0]
    assert (x[0] == 255).all() and (x[1:] == 0).all()  # only the red box is left
    (cls / "GT-00000.csv").write_text("Filename;Width\n00000_00000.ppm;30\n")
    with pytest.raises(DataError, match="not a GTSRB annotation file"):
        load_dataset("folder", root, image_size=8)


def test_fingerprint_is_the_file_list(tmp_path):
    root = make_folder(tmp_path / "d")
    before = data_fingerprint(load_dataset("folder", root, image_size=16))
    assert before["how"].startswith("sha256 over the image size")
    assert data_fingerprint(load_dataset("folder", root, image_size=20)) != before
    _png(root / "val" / "class0" / "new.png", (1, 2, 3))
    after = data_fingerprint(load_dataset("folder", root, image_size=16))
    assert after["train"] == before["train"] and after["test"] != before["test"]


@pytest.mark.parametrize("setup, size, message", [
    ("no-val", 16, "no train/ and val/"),
    ("one-class", 16, "at least 2"),
    ("extra-test-class", 16, "classes that train/ lacks"),
    ("ok", 4, "--image-size 4: must be 8..1024"),
    ("missing", 16, "does not exist"),
])
def test_bad_layouts_are_one_line_errors(tmp_path, setup, size, message):
    root = tmp_path / "d"
    if setup != "missing":
        make_folder(root, classes=1 if setup == "one-class" else 2)
    if setup == "no-val":
        (root / "val").rename(root / "holdout")
    if setup == "extra-test-class":
        _png(root / "val" / "zebra" / "0.png", (0, 0, 0))
    with pytest.raises(DataError, match=message) as e:
        load_dataset("folder", root, image_size=size)
    assert "\n" not in str(e.value)


def test_training_skips_images_that_do_not_decode_and_records_them(tmp_path):
    from edgempir.members import parse_members
    from edgempir.train import TrainConfig, train

    root = make_folder(tmp_path / "d")
    truncated_jpeg(root / "train" / "class1" / "broken.jpg")
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="folder", data_dir=str(root),
                      arch="mnist", members=parse_members("w2a4,fp32"), epochs=1,
                      batch_size=8, threads=1, image_size=28, workers=0)
    manifest = train(cfg, progress=False)
    skipped = manifest["dataset"]["folder"]["skipped_in_training"]
    assert [s["path"] for s in skipped] == ["train/class1/broken.jpg"]
    assert manifest["dataset"]["name"] == "folder-28px" and manifest["dataset"]["n_train"] == 13
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert saved["dataset"]["class_names"] == ["class0", "class1", "class2"]
