"""The run directory: layout, manifest schema, weights I/O and ``load_run``.

Layout (docs/FORMATS.md has the full schema)::

    runs/<name>/
      manifest.json                 schema, data set, arch, members, metrics, versions
      members/<i>-<spec>.safetensors
      checkpoints/<i>-<spec>.safetensors   last finished epoch (weights, optimizer, history)
      train.log
      eval/...                      written by ``edgempir eval``

``train`` builds the run in ``<name>.partial/`` and renames it to ``<name>`` when every
member is trained, so a kill leaves either the complete run or a partial one that
``--resume`` continues. Weights are safetensors: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgempir.errors import RunDirError
from edgempir.members import MemberSpec, parse_spec

SCHEMA = "edgempir.run"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def partial_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def member_weights_path(run: Path, index: int, spec: MemberSpec) -> Path:
    return run / "members" / f"{index}-{spec.name}.safetensors"


def checkpoint_path(run: Path, index: int, spec: MemberSpec) -> Path:
    return run / "checkpoints" / f"{index}-{spec.name}.safetensors"


def read_manifest(run: str | os.PathLike) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        hint = ""
        if partial_dir(run).is_dir():
            hint = f" ({partial_dir(run)} holds an unfinished run: rerun train with --resume)"
        raise RunDirError(f"run directory {run} does not exist{hint}; train one with "
                          "'edgempir train --out DIR'")
    path = run / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run} is not a run directory ({MANIFEST} missing); train one with "
                          "'edgempir train --out DIR'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not valid JSON ({e}); retrain the run") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise RunDirError(f"{path} is not an edgempir run manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunDirError(f"{run} was written with run schema version {version}; this edgempir "
                          f"reads version {SCHEMA_VERSION}: retrain it with this version")
    for key in ("dataset", "arch", "members", "combiner"):
        if key not in manifest:
            raise RunDirError(f"{path} lacks {key!r}; retrain the run")
    for m in manifest["members"]:
        f = run / m["file"]
        if not f.is_file():
            raise RunDirError(f"{run}: member weights {m['file']} are missing; retrain the run "
                              "or copy the whole directory")
    return manifest


def member_specs(manifest: dict) -> list[MemberSpec]:
    return [parse_spec(m["spec"]) for m in manifest["members"]]


def save_weights(path: Path, state: dict, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a state dict as safetensors."""
    from safetensors.torch import save_file

    from edgempir.fsutil import atomic_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"{path}: not a readable safetensors file ({e}); weights are read "
                          "only from safetensors, never unpickled") from None


def build_member(manifest: dict, spec: MemberSpec):
    from edgempir.models import build_model

    ds = manifest["dataset"]
    return build_model(manifest["arch"], spec, tuple(ds["input_shape"]), ds["num_classes"])


def load_member(run: Path, manifest: dict, index: int):
    spec = member_specs(manifest)[index]
    model = build_member(manifest, spec)
    state, _ = load_weights(run / manifest["members"][index]["file"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise RunDirError(f"{run}: weights of member {index} ({spec}) do not fit architecture "
                          f"{manifest['arch']!r} ({first}); retrain the run") from None
    return model.eval()


def load_run(path: str | os.PathLike, combiner: str | None = None):
    """Load a run directory into an :class:`edgempir.ensemble.Ensemble` (eval mode).

    The returned module carries ``.manifest`` (the run's manifest.json) and ``.run_dir``.
    """
    from edgempir.ensemble import Ensemble

    run = Path(path)
    manifest = read_manifest(run)
    members = [load_member(run, manifest, i) for i in range(len(manifest["members"]))]
    ens = Ensemble(members, member_specs(manifest), combiner or manifest["combiner"]).eval()
    ens.manifest = manifest
    ens.run_dir = run
    return ens


def build_model_for(arch: str, spec: MemberSpec, data):
    from edgempir.models import build_model

    return build_model(arch, spec, data.input_shape, data.num_classes)
