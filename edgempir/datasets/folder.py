"""Image-folder data sets: the ImageNet / torchvision ImageFolder layout, read with Pillow.

Layout::

    DATA_DIR/train/<class>/*.png|*.jpg|*.jpeg|*.ppm     (sub-folders are walked too)
    DATA_DIR/val/<class>/...   or   DATA_DIR/test/<class>/...

Class names are the sorted folder names under ``train/``; the test split may lack some
classes but may not add any. GTSRB's training layout is read as such: a class folder that
holds a ``GT-*.csv`` (``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``) has
each of its images cropped to the CSV's box before resizing. GTSRB's test layout is read
too: a flat test split (``test/*.ppm`` with ``GT-final_test.csv``, whose ``ClassId``
column gives the labels; the class folders under ``train/`` are then the ClassIds,
``00000``...) takes labels and crop boxes from the CSV; an image the CSV lists that is
missing or unreadable is skipped and reported like any other.

Images are never all in memory: :class:`FolderSplit` keeps paths and labels; one image is
decoded, cropped, converted to RGB and resized (squashed to ``image_size`` x ``image_size``,
bilinear) when it is asked for, by a DataLoader worker in training (:func:`loader`) or by
:class:`LazyImages` for the small subsets that eval and export index.

Unreadable images, our choice: **skip and report**. At open, every file's header is read
(format, size); a file that is too big, not PNG/JPEG/PPM, or whose header does not parse is
left out of the split and listed in ``skipped`` (path and reason; the manifest records
them). A file whose header parses but whose pixels do not decode (a truncated PNG) is
dropped from its training batch and reported the same way; asked for by eval or export
(``LazyImages``), it is a one-line DataError naming the file, since a fixed evaluation
subset cannot silently shrink.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgempir.errors import DataError
from edgempir.fsutil import show_path

EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm")
FORMATS = ("PNG", "JPEG", "PPM")
TRAIN_SPLIT = "train"
TEST_SPLITS = ("val", "test")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024   # --image-size bounds (the run caps sides at 4096)
MAX_FILE_BYTES = 64 << 20      # one image file; ImageNet's largest JPEG is ~15 MB
MAX_SOURCE_PIXELS = 64 << 20   # width * height of one source image (Pillow's bomb guard: 89M)
MAX_FILES = 20_000_000         # per split: ImageNet-21k has 14M
MAX_CSV_BYTES = 16 << 20       # one GTSRB annotation file (the largest is ~100 kB)
HOW = ("lay the images out as DATA_DIR/train/<class>/*.png and DATA_DIR/val/<class>/ (or "
       "test/), PNG, JPEG or PPM, and pass --data-dir DATA_DIR")
FINGERPRINT_HOW = ("sha256 over the image size, then 'relative path, label, file size, crop "
                   "box' of every image of the split in sorted order (the file list, not the "
                   "pixels)")


@dataclass(frozen=True)
class Entry:
    path: str                      # relative to the data folder, POSIX separators
    label: int
    box: tuple[int, int, int, int] | None = None   # GTSRB crop (x1, y1, x2, y2), inclusive
    size: int = 0                  # bytes, for the fingerprint


@dataclass
class FolderSplit:
    root: Path
    name: str                      # "train", "val" or "test"
    entries: list[Entry]
    image_size: int
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        return np.fromiter((e.label for e in self.entries), dtype=np.int64,
                           count=len(self.entries))

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"image_size={self.image_size}\n".encode())
        for e in self.entries:
            h.update(f"{e.path}\t{e.label}\t{e.size}\t{e.box}\n".encode())
        return h.hexdigest()

    def try_load(self, i: int) -> tuple[np.ndarray | None, str]:
        """uint8 [3, S, S], or None and why the image could not be decoded."""
        from PIL import Image

        e = self.entries[i]
        try:
            with Image.open(self.root / e.path) as img:
                if e.box is None:
                    img.draft("RGB", (self.image_size, self.image_size))  # JPEG: decode smaller
                else:
                    x1, y1, x2, y2 = e.box
                    img = img.crop((x1, y1, x2 + 1, y2 + 1))
                img = img.convert("RGB").resize((self.image_size, self.image_size),
                                                Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return None, f"{type(err).__name__}: {one_line(str(err))[:160]}"

    def load(self, i: int) -> np.ndarray:
        x, reason = self.try_load(i)
        if x is None:
            raise DataError(f"{show_path(self.root / self.entries[i].path)}: the image does not "
                            f"decode ({reason}); remove or replace it and rerun")
        return x


def one_line(text: str) -> str:
    return " ".join(text.split())


class LazyImages:
    """The images of a split as a read-only uint8 array ``[N, 3, S, S]`` that loads only the
    rows it is indexed with (``x[indices]``, ``x[a:b]``): what eval's subsets and export's
    calibration sets take from a data set, without the whole set in memory."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, split: FolderSplit):
        self.split = split

    @property
    def shape(self) -> tuple[int, int, int, int]:
        s = self.split.image_size
        return (len(self.split), 3, s, s)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.split.load(int(np.arange(len(self))[key]))
        rows = np.arange(len(self))[key]
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.uint8)
        for k, i in enumerate(rows):
            out[k] = self.split.load(int(i))
        return out

    def __array__(self, *args, **kwargs):
        raise DataError("an image folder is streamed from disk: index it with the rows you "
                        "need instead of loading the whole split")


def _header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image of the set (None: it can), from its size and header."""
    from PIL import Image

    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size > MAX_FILE_BYTES:
        return f"{size} bytes, more than the {MAX_FILE_BYTES >> 20} MiB an image may have"
    try:
        with Image.open(path) as img:
            fmt, (w, h) = img.format, img.size
            if fmt not in FORMATS:
                return f"a {fmt} image; only {', '.join(FORMATS)} are read"
            if w < 1 or h < 1 or w * h > MAX_SOURCE_PIXELS:
                return f"{w}x{h} pixels, more than the {MAX_SOURCE_PIXELS >> 20} M an image may have"
            return _truncation(img, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"not a readable image ({type(e).__name__}: {one_line(str(e))[:120]})"


def _truncation(img, size: int) -> str | None:
    """Truncation found without decoding: a PNG's chunk CRCs (``verify`` reads, does not
    inflate), a raw PPM's byte count. A truncated JPEG is found only when decoded."""
    if img.format == "PNG":
        img.verify()  # raises OSError / SyntaxError on a truncated or damaged file
    elif img.format == "PPM" and img.tile and img.tile[0][0] == "raw":
        depth = 2 if getattr(img, "_maxval", 255) > 255 else 1
        need = img.tile[0][2] + img.size[0] * img.size[1] * len(img.getbands()) * depth
        if size < need:
            return f"truncated: {size} bytes, its header promises {need}"
    return None


def _gtsrb_rows(csv_path: Path) -> dict[str, tuple[tuple[int, int, int, int], int | None]]:
    """One GTSRB annotation file: file name -> (crop box, ClassId or None if no column)."""
    if csv_path.stat().st_size > MAX_CSV_BYTES:
        raise DataError(f"{show_path(csv_path)}: more than {MAX_CSV_BYTES >> 20} MiB, not "
                        "a GTSRB annotation file")
    rows = {}
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter=";"):
                x1, y1, x2, y2 = (int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
                if not (0 <= x1 <= x2 and 0 <= y1 <= y2):
                    raise ValueError(f"box {x1},{y1},{x2},{y2} of {row['Filename']}")
                cls = row.get("ClassId")
                rows[row["Filename"]] = ((x1, y1, x2, y2), None if cls is None else int(cls))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{show_path(csv_path)}: not a GTSRB annotation file (expected "
                        f"Filename;...;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2 rows: {one_line(str(e))[:120]})"
                        ) from None
    return rows


def _gtsrb_boxes(class_dir: Path) -> dict[str, tuple[int, int, int, int]]:
    """GTSRB's crop boxes of one class folder, by file name ({} when it has no GT-*.csv)."""
    return {name: box for csv_path in sorted(class_dir.glob("GT-*.csv"))
            for name, (box, _) in _gtsrb_rows(csv_path).items()}


def _flat_gtsrb_csv(split_dir: Path) -> Path | None:
    """GTSRB's test layout: images directly in the split folder and one GT-*.csv there
    with a ClassId column (GT-final_test.csv); None for a class-folder split."""
    found = sorted(split_dir.glob("GT-*.csv"))
    for csv_path in found:
        with open(csv_path, encoding="utf-8", errors="replace") as f:
            if "ClassId" in (c.strip() for c in f.readline().split(";")):
                return csv_path
    return None


def _class_number(names: dict[str, int]) -> dict[int, int]:
    """GTSRB's ClassId -> label: the class folders are the ClassIds, zero-padded (00000)."""
    if not all(n.isdigit() for n in names):
        raise DataError("folder: a flat GTSRB test split (GT-*.csv with ClassId) needs class "
                        "folders named by their ClassId (00000, 00001, ...) under train/")
    return {int(n): label for n, label in names.items()}


def _scan_flat_gtsrb(root: Path, split: str, csv_path: Path, classes: dict[str, int],
                     image_size: int) -> FolderSplit:
    """The flat test folder: label and crop box of every image from the CSV."""
    by_number = _class_number(classes)
    entries: list[Entry] = []
    skipped: list[dict] = []
    for name, (box, class_id) in sorted(_gtsrb_rows(csv_path).items()):
        rel = f"{split}/{name}"
        if class_id not in by_number:
            raise DataError(f"{show_path(csv_path)}: {name} has ClassId {class_id}, which has "
                            f"no folder under train/")
        path = root / split / name
        problem = (_header_problem(path) if Path(name).name == name
                   else "not a file name of this folder")
        if problem is not None:
            skipped.append({"path": rel, "reason": problem})
            continue
        entries.append(Entry(rel, by_number[class_id], box, path.stat().st_size))
        if len(entries) > MAX_FILES:
            raise DataError(f"{show_path(root / split)}: more than {MAX_FILES} images")
    return FolderSplit(root, split, entries, image_size, skipped)


def _scan_split(root: Path, split: str, classes: dict[str, int], image_size: int
                ) -> FolderSplit:
    entries: list[Entry] = []
    skipped: list[dict] = []
    for cls in sorted(classes):
        class_dir = root / split / cls
        if not class_dir.is_dir():
            continue
        boxes = _gtsrb_boxes(class_dir)
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not name.lower().endswith(EXTENSIONS):
                    continue
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                problem = _header_problem(path)
                if problem is not None:
                    skipped.append({"path": rel, "reason": problem})
                    continue
                box = boxes.get(name) if Path(dirpath) == class_dir else None
                entries.append(Entry(rel, classes[cls], box, path.stat().st_size))
                if len(entries) > MAX_FILES:
                    raise DataError(f"{show_path(root / split)}: more than {MAX_FILES} images")
    return FolderSplit(root, split, entries, image_size, skipped)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def open_folder(root: Path, image_size: int) -> tuple[FolderSplit, FolderSplit, tuple[str, ...]]:
    """Scan ``root``'s train and val/test splits; (train, test, class names)."""
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(f"--image-size {image_size}: must be {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")
    if not root.is_dir():
        raise DataError(f"folder: data folder {show_path(root)} does not exist; {HOW}")
    test_name = next((s for s in TEST_SPLITS if (root / s).is_dir()), None)
    if not (root / TRAIN_SPLIT).is_dir() or test_name is None:
        raise DataError(f"folder: {show_path(root)} has no train/ and val/ (or test/) "
                        f"sub-folders; {HOW}")
    names = _class_folders(root / TRAIN_SPLIT)
    if len(names) < 2:
        raise DataError(f"folder: {show_path(root / TRAIN_SPLIT)} has {len(names)} class "
                        f"folder(s); a classifier needs at least 2; {HOW}")
    extra = sorted(set(_class_folders(root / test_name)) - set(names))
    if extra:
        raise DataError(f"folder: {show_path(root / test_name)} has classes that train/ lacks "
                        f"({', '.join(extra[:5])}); {HOW}")
    classes = {n: i for i, n in enumerate(names)}
    train = _scan_split(root, TRAIN_SPLIT, classes, image_size)
    flat = _flat_gtsrb_csv(root / test_name)
    test = (_scan_flat_gtsrb(root, test_name, flat, classes, image_size) if flat is not None
            else _scan_split(root, test_name, classes, image_size))
    for split in (train, test):
        if not len(split):
            raise DataError(f"folder: {show_path(root / split.name)} holds no readable "
                            f"PNG/JPEG/PPM image ({len(split.skipped)} skipped); {HOW}")
    return train, test, tuple(names)


# ---------------------------------------------------------------- streaming (torch)
def loader(split: FolderSplit, batches: list[np.ndarray], workers: int):
    """A DataLoader yielding ``(x uint8 [b, 3, S, S], y, ok, reason)`` per batch of row
    indices, decoded by ``workers`` processes; rows that did not decode have ok False."""
    import torch

    from edgempir.datasets.stream import SplitRows

    return torch.utils.data.DataLoader(SplitRows(split), batch_sampler=[b.tolist() for b in batches],
                                       num_workers=workers, persistent_workers=False)
