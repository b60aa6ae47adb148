"""SECURITY.md's path rules for the manifest's ``files``, one case per rule, on the tiny
bundle (tests/conftest.py): NUL and control characters, backslashes, empty and ``.``
parts, ``..``, absolute paths, the reserved names (``manifest.json``, ``engines/``), and a
symlink that leaves the bundle. Each is refused with one line naming the path."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from edgempir.errors import BundleError
from edgempir.targets.device.bundle import verify_bundle

DIGEST = "0" * 64


def _with_file_entry(bundle, rel):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][rel] = DIGEST
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("rel, needle", [
    ("calib/clean.npz\x00.txt", "not a plain relative path"),       # NUL
    ("calib/\x1bclean.npz", "not a plain relative path"),           # control character
    ("calib\\clean.npz", "not a plain relative path"),              # backslash
    ("", "not a plain relative path"),                              # empty
    ("calib//clean.npz", "points outside the bundle"),              # empty part
    ("calib/", "points outside the bundle"),                        # empty last part
    ("./calib/clean.npz", "points outside the bundle"),             # "." part
    ("calib/../../etc/passwd", "points outside the bundle"),        # ".."
    ("/etc/passwd", "points outside the bundle"),                   # absolute
    ("manifest.json", "must not be in the file list"),              # reserved
    ("engines/ensemble.engine", "must not be in the file list"),    # reserved folder
])
def test_path_rules_of_the_file_list(tiny_copy, rel, needle):
    _with_file_entry(tiny_copy, rel)
    with pytest.raises(BundleError) as e:
        verify_bundle(tiny_copy)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


def test_a_symlink_that_leaves_the_bundle_is_refused(tiny_copy, tmp_path):
    outside = tmp_path / "outside.npz"
    shutil.copy(tiny_copy / "calib" / "clean.npz", outside)
    os.symlink(outside, tiny_copy / "calib" / "link.npz")
    _with_file_entry(tiny_copy, "calib/link.npz")
    with pytest.raises(BundleError, match="points outside the bundle \\(symlink\\)"):
        verify_bundle(tiny_copy)


def test_the_untouched_copy_verifies(tiny_copy):
    assert verify_bundle(tiny_copy).target == "x86"
