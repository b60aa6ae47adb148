"""The deployed ensemble as a Python object, for services that embed it (device side).

::

    from edgempir.targets.device import load_bundle

    ens = load_bundle("bundles/fm-x86")      # verifies the manifest and every sha256 first
    ens.predict(x)                           # x: float32 [batch, C, H, W] in [0, 1] -> class ids
    ens.member_logits(x)                     # [members, batch, classes]; NaN: not run

The object runs the bundle's ensemble graph with the runtime its target names (ONNX Runtime
or TensorRT), exactly as ``edgempir bench`` measures it. It is not thread-safe; give each
thread its own (ONNX Runtime sessions are cheap to share by opening one per thread).
"""
from __future__ import annotations

import os

import numpy as np

from edgempir.contract import ACCEPTED, CLASS_IDS, MEMBER_LOGITS
from edgempir.errors import InputError
from edgempir.members import MemberSpec
from edgempir.targets.device.bundle import Bundle, verify_bundle
from edgempir.targets.device.runtime import open_model


class DeployedEnsemble:
    """A verified bundle's ensemble, opened with its runtime."""

    def __init__(self, bundle: Bundle, threads: int | None = None,
                 providers: list | None = None):
        self.bundle = bundle
        self._model = open_model(bundle, "ensemble", threads=threads, providers=providers)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One image's shape, [C, H, W]."""
        return tuple(self.bundle.input_shape)

    @property
    def class_names(self) -> list[str]:
        return list(self.bundle.class_names)

    @property
    def specs(self) -> list[MemberSpec]:
        return list(self.bundle.specs)

    def _batch(self, x) -> np.ndarray:
        a = np.asarray(x)
        if a.shape == self.input_shape:  # one image
            a = a[None]
        if a.ndim != 4 or tuple(a.shape[1:]) != self.input_shape:
            raise InputError(f"input of shape {tuple(a.shape)} does not fit this bundle; pass "
                             f"[batch, {', '.join(map(str, self.input_shape))}] (or one image)")
        if a.dtype.kind not in "fiu":
            raise InputError(f"input of dtype {a.dtype} is not numeric; pass float32 in [0, 1]")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise InputError("input holds NaN or infinite values; pass finite values in [0, 1]")
        return a

    def run(self, x) -> dict[str, np.ndarray]:
        """Every output of the ensemble graph by name (docs/BUNDLE.md): ``class_ids``,
        ``member_logits``, ``member_ran``, ``accepted``."""
        return self._model.run_outputs(self._batch(x))

    def predict(self, x) -> np.ndarray:
        """Class ids [batch] (int64), the deployed decision."""
        return np.asarray(self.run(x)[CLASS_IDS], dtype=np.int64)

    def accepted(self, x) -> np.ndarray:
        """[batch] bool: whether the bundle's reject policy (manifest ``reject_policy``)
        accepts each decision; act on a class id only where this is True."""
        out = self.run(x)
        if ACCEPTED not in out:  # exported before the reject option: the vote never rejects
            return np.ones(len(out[CLASS_IDS]), dtype=bool)
        return np.asarray(out[ACCEPTED], dtype=bool)

    def member_logits(self, x) -> np.ndarray:
        """Every member's logits, [members, batch, classes] (float32). With the early-exit
        vote a member skipped on a row has a NaN row there (never zeros)."""
        return np.asarray(self.run(x)[MEMBER_LOGITS], dtype=np.float32)

    def info(self) -> dict:
        """Runtime, version, providers and threads of the open engine."""
        return self._model.info()


def load_bundle(path: str | os.PathLike, *, threads: int | None = None,
                providers: list | None = None) -> DeployedEnsemble:
    """Verify the bundle at ``path`` (schema, paths, every sha256), then open its ensemble."""
    return DeployedEnsemble(verify_bundle(path), threads=threads, providers=providers)
