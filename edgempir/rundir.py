"""The run directory: layout, manifest schema, weights I/O and ``load_run``.

Layout (docs/FORMATS.md has the full schema)::

    runs/<name>/
      manifest.json                 schema, data set, arch, members, metrics, versions
      members/<i>-<spec>.safetensors
      checkpoints/<i>-<spec>.safetensors   last finished epoch (weights, optimizer, history)
      train.log
      eval/...                      written by ``edgempir eval`` (model cards: here; its
                                    reports are read by others through read_eval_report)

``train`` builds the run in ``<name>.partial/`` and renames it to ``<name>`` when every
member is trained, so a kill leaves either the complete run or a partial one that
``--resume`` continues. Weights are safetensors: nothing is ever unpickled.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from edgempir.contract import check_member_table, member_stem
from edgempir.errors import RunDirError, SpecError
from edgempir.fsutil import show_path
from edgempir.members import MemberSpec, parse_spec
from edgempir.validate import read_json

SCHEMA = "edgempir.run"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a run manifest is a few kB; refuse to parse absurd files
MAX_INPUT_SIDE = 4096          # sanity bounds on the manifest's shape and class count
MAX_CLASSES = 100_000


def partial_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def member_weights_path(run: Path, index: int, spec: MemberSpec) -> Path:
    return run / "members" / f"{member_stem(index, spec)}.safetensors"


def checkpoint_path(run: Path, index: int, spec: MemberSpec) -> Path:
    return run / "checkpoints" / f"{member_stem(index, spec)}.safetensors"


def read_manifest(run: str | os.PathLike) -> dict[str, Any]:
    run = Path(run)
    if not run.is_dir():
        hint = ""
        if partial_dir(run).is_dir():
            hint = f" ({partial_dir(run)} holds an unfinished run: rerun train with --resume)"
        raise RunDirError(f"run directory {run} does not exist{hint}; train one with "
                          "'edgempir train --out DIR'")
    path = run / MANIFEST
    try:  # bytes capped before reading, depth bounded, NaN refused (edgempir.validate)
        manifest = read_json(path, error=RunDirError, hint="retrain the run",
                             max_bytes=MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise RunDirError(f"{show_path(run)} is not a run directory ({MANIFEST} missing); "
                          "train one with 'edgempir train --out DIR'") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise RunDirError(f"{path} is not an edgempir run manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunDirError(f"{run} was written with run schema version {version!r}; this "
                          f"edgempir reads version {SCHEMA_VERSION}: retrain it with this version")
    for key in ("dataset", "arch", "members", "combiner"):
        if key not in manifest:
            raise RunDirError(f"{path} lacks {key!r}; retrain the run")
    _check_manifest_types(path, manifest)
    for m in manifest["members"]:
        f = run / m["file"]
        if not f.is_file():
            raise RunDirError(f"{run}: member weights {m['file']} are missing; retrain the run "
                              "or copy the whole directory")
    return manifest


def _check_manifest_types(path: Path, manifest: dict) -> None:
    """The fields that loading a run relies on, so that a damaged or hand-edited manifest
    is a one-line error here instead of a TypeError deep inside torch."""
    def bad(field: str, what: str) -> RunDirError:
        return RunDirError(f"{path}: {field} must be {what}; retrain the run")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ds = manifest["dataset"]
    if not isinstance(ds, dict) or not isinstance(ds.get("name"), str):
        raise bad("dataset", "an object with a 'name'")
    shape = ds.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3 or \
            not all(is_int(s) and 0 < s <= MAX_INPUT_SIDE for s in shape):
        raise bad("dataset.input_shape", f"[C, H, W] with sides 1..{MAX_INPUT_SIDE}")
    if not is_int(ds.get("num_classes")) or not 2 <= ds["num_classes"] <= MAX_CLASSES:
        raise bad("dataset.num_classes", f"an integer 2..{MAX_CLASSES}")
    for key in ("arch", "combiner"):
        if not isinstance(manifest[key], str):
            raise bad(key, "a string")
    from edgempir.models import QUANTIZERS

    if manifest.get("quantizer") is not None and manifest["quantizer"] not in QUANTIZERS:
        raise bad("quantizer", f"one of {', '.join(QUANTIZERS)} (or absent: edge)")
    members = manifest["members"]
    if not isinstance(members, list) or not members:
        raise bad("members", "a non-empty list")
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("spec"), str):
            raise bad(f"members[{i}]", "an object with a 'spec' string")
        rel = m.get("file")
        if not isinstance(rel, str) or not _inside_run(rel):
            # weights are read from inside the run only: never '../x' or '/etc/x'
            raise bad(f"members[{i}].file", "a relative path inside the run directory")
    ref = manifest.get("reference_member", 0)
    if not is_int(ref) or not 0 <= ref < len(members):
        raise bad("reference_member", "a member index")
    try:  # bit widths are integers that match the spec ("2" is not 2)
        check_member_table(members, ref)
    except SpecError as e:
        raise RunDirError(f"{show_path(path)}: {e}; retrain the run") from None


def data_used(manifest: dict, data, splits: tuple[str, ...], allow_other: bool,
              echo=lambda s: None) -> dict:
    """Which data a command (eval, export) used, for its report; refuses data whose
    fingerprint differs from the run's in one of ``splits`` unless ``allow_other``.

    A run written before fingerprints were recorded is used with a note in the record.
    """
    from edgempir.data import data_fingerprint
    from edgempir.errors import DataError

    now = data_fingerprint(data)
    record = {"name": data.name, "source": data.source, "fingerprint": now,
              "checked_splits": list(splits), "allow_other_data": bool(allow_other)}
    saved = manifest["dataset"].get("fingerprint")
    if saved is None:
        record["check"] = ("not checked: the run predates data fingerprints; retrain it to "
                           "have its data checked")
        echo(f"note: {record['check']}")
        return record
    if not isinstance(saved, dict) or not all(isinstance(saved.get(s), str) for s in splits):
        raise RunDirError("the run manifest's dataset.fingerprint is not a fingerprint of "
                          f"the {'/'.join(splits)} split(s); retrain the run")
    differ = [s for s in splits if saved[s] != now[s]]
    if not differ:
        record["check"] = "same data as the run was trained on"
    elif allow_other:
        record["check"] = (f"OTHER DATA: the {'/'.join(differ)} split(s) differ from the run's "
                           "(accepted with --allow-other-data)")
        echo(f"warning: {record['check']}")
    else:
        raise DataError(f"{data.name} at {show_path(data.source)}: the {'/'.join(differ)} "
                        f"split(s) differ from the data the run was trained on (sha256 "
                        f"{now[differ[0]][:12]}..., the run's {saved[differ[0]][:12]}...); "
                        "point --data-dir at the run's data, or pass --allow-other-data to "
                        "use this data anyway (the report records it)")
    return record


def _inside_run(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and "\\" not in rel and not any(ord(c) < 32 for c in rel) and \
        not p.is_absolute() and ".." not in p.parts


def quantizer_family(manifest: dict) -> str:
    """The run's quantizer family; runs written before it was recorded are ``edge`` (the
    only family then, whatever preset name their config used)."""
    from edgempir.models import LEGACY_QUANTIZER

    return manifest.get("quantizer") or LEGACY_QUANTIZER


def member_specs(manifest: dict) -> list[MemberSpec]:
    return [parse_spec(m["spec"]) for m in manifest["members"]]


def save_weights(path: Path, state: dict, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a state dict as safetensors."""
    from safetensors.torch import save_file

    from edgempir.fsutil import atomic_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    with atomic_file(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except Exception as e:  # safetensors reports a full disk as its own error type
            err = _as_os_error(e)
            if err is e:
                raise
            raise err from e


def _as_os_error(e: Exception) -> Exception:
    """SafetensorError("... (os error 28)") -> OSError(28), so atomic_file reports a full
    disk as a one-line WriteError; anything else is returned unchanged."""
    import re

    m = re.search(r"os error (\d+)", str(e))
    if isinstance(e, OSError) or m is None:
        return e
    code = int(m.group(1))
    return OSError(code, os.strerror(code))


def load_weights(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            # safe_open has no __iter__: .keys() is the API
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"{path}: not a readable safetensors file ({e}); weights are read "
                          "only from safetensors, never unpickled") from None


def build_member(manifest: dict, spec: MemberSpec):
    from edgempir.models import build_model

    ds = manifest["dataset"]
    return build_model(manifest["arch"], spec, tuple(ds["input_shape"]), ds["num_classes"],
                       quantizer_family(manifest))


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


def model_card_path(run: str | os.PathLike, protocol: str, config: str) -> Path:
    return Path(run) / EVAL_DIR / f"model-card-{protocol}-{config}.json"


def write_model_card(run: str | os.PathLike, protocol: str, config: str, card: dict) -> Path:
    """The RobustBench-style model card beside an eval report (atomic, like the report)."""
    from edgempir.fsutil import atomic_write_json

    path = model_card_path(run, protocol, config)
    atomic_write_json(path, card)
    return path


# ------------------------------------------------------------------ eval's reports
EVAL_DIR = "eval"
EVAL_SCHEMA = "edgempir.eval"  # what edgempir.eval writes (docs/EVAL.md)


def read_eval_report(run: str | os.PathLike, protocol: str, config: str | None = None
                     ) -> tuple[Path, dict] | None:
    """Eval's report of ``protocol`` in RUN (``eval/<protocol>-<config>.json``; config None:
    the newest of that protocol) as (path, summary), or None when there is none.

    The one reader of eval's report for other commands: bytes capped, depth bounded, NaN
    refused, the schema checked. The summary holds what other artefacts record about the
    evaluation: ``config``, ``eps``, ``norm``, ``n_examples``, ``seed``, the headline
    ``results`` (``eps``, ``clean``, ``worst_case`` per eps) and ``worst_case_over``.
    """
    eval_dir = Path(run) / EVAL_DIR
    candidates = [eval_dir / f"{protocol}-{config}.json"] if config else \
        sorted(eval_dir.glob(f"{protocol}-*.json"), key=lambda p: p.stat().st_mtime)[::-1]
    for path in candidates:
        if not path.is_file():
            continue
        try:  # bytes capped, depth bounded, NaN refused
            report = read_json(path, error=RunDirError, hint=f"rerun 'edgempir eval {run}'")
        except OSError as e:
            raise RunDirError(f"{show_path(path)} cannot be read ({e.strerror or e}); rerun "
                              f"'edgempir eval {run}'") from None
        if not isinstance(report, dict) or report.get("schema") != EVAL_SCHEMA:
            raise RunDirError(f"{path} is not an edgempir eval report; rerun 'edgempir eval'")
        if report.get("protocol") != protocol:
            continue
        results = [{"eps": r.get("eps"), "clean": r.get("clean"),
                    "worst_case": r.get("worst_case")}
                   for r in report.get("results", []) if isinstance(r, dict)]
        return path, {"protocol": protocol, "config": report.get("config"),
                      "eps": report.get("eps"), "norm": report.get("norm", "Linf"),
                      "n_examples": report.get("n_examples"), "seed": report.get("seed"),
                      "results": results, "worst_case_over": report.get("worst_case_over")}
    return None


def build_model_for(arch: str, spec: MemberSpec, data, quantizer: str = "edge"):
    from edgempir.models import build_model

    return build_model(arch, spec, data.input_shape, data.num_classes, quantizer)
