"""GTSRB's layouts, generated here (never downloaded): class folders 00000.. of .ppm with a
GT-<class>.csv of crop boxes for train/, and the flat test folder (test/*.ppm with
GT-final_test.csv, whose ClassId column gives the labels)."""
import numpy as np
import pytest
from PIL import Image

from edgempir.data import load_dataset
from edgempir.errors import DataError

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
COLORS = {0: (255, 0, 0), 1: (0, 0, 255)}


def _sign(path, color):
    """30 px image whose sign (the colour) fills the box (5, 10)-(14, 19); grey around it."""
    img = np.full((30, 30, 3), 128, dtype=np.uint8)
    img[10:20, 5:15] = color
    Image.fromarray(img).save(path)  # .ppm: PPM


def make_gtsrb(root, test_rows=None):
    for c, color in COLORS.items():
        cls = root / "train" / f"{c:05d}"
        cls.mkdir(parents=True)
        rows = []
        for k in range(3):
            _sign(cls / f"{c:05d}_{k:05d}.ppm", color)
            rows.append(f"{c:05d}_{k:05d}.ppm;30;30;5;10;14;19;{c}\n")
        (cls / f"GT-{c:05d}.csv").write_text(HEADER + "".join(rows))
    test = root / "test"
    test.mkdir()
    labels = [1, 0, 1, 1]
    for k, c in enumerate(labels):
        _sign(test / f"{k:05d}.ppm", COLORS[c])
    rows = test_rows or [f"{k:05d}.ppm;30;30;5;10;14;19;{c}\n" for k, c in enumerate(labels)]
    (test / "GT-final_test.csv").write_text(HEADER + "".join(rows))
    return root, labels


def test_flat_test_folder_takes_labels_and_boxes_from_its_csv(tmp_path):
    root, labels = make_gtsrb(tmp_path / "gtsrb")
    ds = load_dataset("folder", root, image_size=8)
    assert ds.class_names == ("00000", "00001") and ds.folder["test_split"] == "test"
    assert list(ds.y_test) == labels and len(ds.y_train) == 6
    assert [e.path for e in ds.x_test.split.entries][:2] == ["test/00000.ppm", "test/00001.ppm"]
    x = ds.x_test[np.arange(4)]
    for img, c in zip(x, labels):  # cropped to the box: only the sign's colour is left
        assert (img.transpose(1, 2, 0) == COLORS[c]).all()


def test_flat_test_folder_skips_a_listed_image_that_is_missing(tmp_path):
    rows = ["00000.ppm;30;30;5;10;14;19;1\n", "gone.ppm;30;30;5;10;14;19;0\n"]
    root, _ = make_gtsrb(tmp_path / "gtsrb", rows)
    ds = load_dataset("folder", root, image_size=8)
    assert list(ds.y_test) == [1]
    assert [s["path"] for s in ds.folder["skipped"]] == ["test/gone.ppm"]


@pytest.mark.parametrize("row, message", [
    ("00000.ppm;30;30;5;10;14;19;7\n", "ClassId 7, which has no folder"),
    ("00000.ppm;30;30;5;10;14;x;1\n", "not a GTSRB annotation file"),
])
def test_a_bad_test_csv_is_a_one_line_error(tmp_path, row, message):
    root, _ = make_gtsrb(tmp_path / "gtsrb", [row])
    with pytest.raises(DataError, match=message) as e:
        load_dataset("folder", root, image_size=8)
    assert "\n" not in str(e.value)
