"""The suite's own setup (tests/conftest.py), where a mistake costs time, not correctness."""
from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="runs under pytest-xdist")
def test_a_worker_and_its_commands_compute_on_one_thread():
    """Two workers on two cores: a worker left on the controller's two threads (and every
    command it starts) oversubscribed the machine."""
    import torch

    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == 1
