"""Fixtures for the reliability suite (faults, hostile inputs, fuzzing, concurrent bench).

Builds on tests/conftest.py: ``synthetic_run`` (trained in process: w2a4, w4a4, fp32, one
epoch, seed 0) is the uninterrupted reference for the train fault test, ``evaluated_run``
(eval ``testkit.EVAL_ARGS``, in a subprocess) the one for the eval fault test, and
``x86_bundle`` (tests/conftest.py, exported once from it) the one for export and every
bundle test.
Plain helpers live in tests/support/testkit.py; the tiny bundle in tests/conftest.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def bundle_copy(x86_bundle, tmp_path) -> Path:
    dst = tmp_path / "syn-x86"
    shutil.copytree(x86_bundle, dst)
    return dst
