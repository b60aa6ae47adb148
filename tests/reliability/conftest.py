"""Fixtures for the reliability suite (faults, hostile inputs, fuzzing, concurrent bench).

Builds on tests/conftest.py: ``synthetic_run`` (trained in process: w2a4, w4a4, fp32, one
epoch, seed 0) is the uninterrupted reference for the train fault test, ``evaluated_run``
(eval quick, PGD, 64 images, in a subprocess) the one for the eval fault test, and
``x86_bundle`` (tests/conftest.py, exported once from it) the one for export and every
bundle test.
Plain helpers live in helpers.py (tests/ is not on sys.path: tests load it by path).
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


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """tests/cli/conftest.py's tiny bundle (three linear members trained in numpy, real ONNX
    graphs and sets, built in about a second without torch), for the checks that need no
    exported model: loaded by path rather than copied."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "cli" / "conftest.py"
    spec = importlib.util.spec_from_file_location("cli_conftest_for_reliability", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "tiny-x86")


@pytest.fixture
def tiny_copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "tiny-x86"
    shutil.copytree(tiny_bundle, dst)
    return dst


