"""Calibration and evaluation sets that travel with a bundle (npz keyed by input name).

Readers here are numpy-only: the device path (``bench``) uses them.
"""
from edgempir.calib.npz import INPUT_NAME, LABEL_NAME, read_set, write_set

__all__ = ["INPUT_NAME", "LABEL_NAME", "read_set", "write_set"]
