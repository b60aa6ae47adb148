"""ONNX Runtime side of the ``arm`` and ``x86`` targets (device side: numpy + onnxruntime).

The session follows the target profile's ``[onnxruntime]`` table: execution providers,
thread counts and graph optimisation level. :func:`write_optimized_graph` saves the graph
ONNX Runtime actually runs (after its QDQ fusions), which is how tests and ``export``
check that the low-bit convolutions became integer kernels (QLinearConv, ...).

Packed weights (docs/BUNDLE.md, "Weight storage"): a bundle's low-bit integer weights live
in ``*.packed.bin`` files, 2 or 4 bits per value; :mod:`edgempir.targets.device.packing` unpacks
them with numpy into int8 arrays, which are handed to ONNX Runtime with
``SessionOptions.add_external_initializers``. ORT then sees ordinary constant initializers
(same QLinearConv fusions, same outputs as with int8 initializers in the file). ORT copies
them into the graph while the session is created (C API docs of AddExternalInitializers;
checked: overwriting the arrays afterwards changes no output), so they are dropped as soon
as the session exists and the unpacked weights are not held twice.

Threads: ``intra_op_threads`` parallelises inside one operator. ``inter_op_threads`` > 1
switches ORT to ``ExecutionMode.ORT_PARALLEL`` *and* gives the ensemble's member branches
their own execution streams. The second part matters: measured with ONNX Runtime 1.32,
ORT_PARALLEL alone runs every node of ensemble.onnx on one thread, because ORT's default
(device-based) partitioner puts all CPU nodes into one stream; branches only run at the
same time when a ``session.node_partition_config_file`` lists the nodes of each stream.
:func:`branch_partition` writes that file at load: it asks ORT for its own node list
(the optimised graph's node names depend on the ORT version and CPU, so they cannot be
fixed at export), puts the nodes of the lead member (the fp32 one: the longest branch)
on stream 0 with the vote, and the other members round-robin on the remaining streams, and ORT inserts the waits where a stream consumes another's output.
With ``inter_op_threads`` 1 (or 0) the session runs sequentially, ORT's default; the
x86 profile's comment records which is faster where.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgempir.contract import CLASS_IDS, INPUT_NAME, MEMBER_LOGITS
from edgempir.errors import BundleError
from edgempir.targets.device import packing

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("onnxruntime is not installed here; install it with "
                          "'pip install onnxruntime' (or 'pip install edgempir[device]')") from None
    return onnxruntime


def session_options(ort_profile: dict | None = None, threads: int | None = None,
                    optimized_model_filepath: str | os.PathLike | None = None):
    ort = _ort()
    prof = ort_profile or {}
    so = ort.SessionOptions()
    level = prof.get("graph_optimization_level", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    intra = threads if threads is not None else prof.get("intra_op_threads", 0)
    if intra:
        so.intra_op_num_threads = int(intra)
    inter = prof.get("inter_op_threads", 0)
    if inter:
        so.inter_op_num_threads = int(inter)
    # inter-op threads only act in parallel mode; more than one asks for it
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if inter and int(inter) > 1 \
        else ort.ExecutionMode.ORT_SEQUENTIAL
    # warnings (e.g. "optimized model is hardware specific") go to the log, not the user's tty
    so.log_severity_level = 3
    if optimized_model_filepath is not None:
        so.optimized_model_filepath = str(optimized_model_filepath)
    return so


def load_external_initializers(model_path: str | os.PathLike,
                               external_initializers: dict | None = None) -> dict:
    """The packed weights a session over ``model_path`` needs, as name -> int8 array.

    ``external_initializers`` given: used as is (``{}``: none). None: when the file lies in a
    bundle whose manifest says its weights are packed, they are read and unpacked here.
    """
    if external_initializers is not None:
        return dict(external_initializers)
    found = packing.find_bundle_storage(model_path)
    if found is None:
        return {}
    root, storage, rel = found
    try:
        return packing.external_initializers(root, storage, rel)
    except (OSError, KeyError, TypeError, packing.PackingError) as e:
        raise BundleError(f"cannot read the packed weights of {model_path} ({e}); copy the "
                          "bundle again or re-export it") from None


PARTITION_KEY = "session.node_partition_config_file"
_MEMBER_NODE = re.compile(r"^m(\d+)/")


@contextlib.contextmanager
def _quiet_stdout():
    """Silence file descriptor 1 (ORT 1.32's multi-stream planner prints debug lines with
    std::cout while a session is created; they must not reach ``bench --json``'s stdout)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def branch_streams(nodes: list[str], n_streams: int, lead: int | None = None
                   ) -> list[list[str]]:
    """Assign ORT's node list (topological order) to ``n_streams`` streams by member.

    Member ``lead`` (default: the last one) gets stream 0, the others streams 1.. in turn.
    Nodes named ``m{i}/...`` go to member i's stream; nodes ORT created without a member
    prefix (layout Transposes, ReorderOutput) stay with the member node before them; the
    vote (``vote/...``) and anything before the first member node go to stream 0. Empty
    streams are dropped. Any assignment is correct (ORT synchronises streams on data);
    this one keeps each branch on one thread.
    """
    members = sorted({int(m.group(1)) for n in nodes if (m := _MEMBER_NODE.match(n))})
    if lead is None or lead not in members:
        lead = members[-1] if members else None
    rest = [i for i in members if i != lead]
    where: dict[int | None, int] = {lead: 0, **{i: 1 + k % max(n_streams - 1, 1) if n_streams > 1 else 0
                         for k, i in enumerate(rest)}}
    streams: list[list[str]] = [[] for _ in range(n_streams)]
    cur = 0
    for n in nodes:
        m = _MEMBER_NODE.match(n)
        if m:
            cur = where.get(int(m.group(1)), 0)
        elif n.startswith("vote/"):
            cur = 0
        streams[cur].append(n)
    return [s for s in streams if s]


def branch_partition(model_path, so_factory, create, n_streams: int, lead: int | None,
                     workdir: Path) -> Path | None:
    """Write a node partition file that runs the member branches on their own streams.

    ``so_factory()`` makes the session options, ``create(so)`` a session. ORT writes its
    default partition (one stream, ORT's node names) when the file it is given does not
    exist; that list is split by :func:`branch_streams`. Returns None when the graph has
    fewer than two member branches (a member file): no partition, nothing to gain.
    """
    default = workdir / "default-partition.json"
    so = so_factory()
    so.add_session_config_entry(PARTITION_KEY, str(default))
    create(so)
    try:
        config = json.loads(default.read_text())
        nodes = [n for stream in config["streams"] for n in stream]
        device = config["devices"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    streams = branch_streams(nodes, n_streams, lead)
    if len(streams) < 2:
        return None
    path = workdir / "branches.json"
    path.write_text(json.dumps({"type": config.get("type", "DeviceBasedPartitioner"),
                                "devices": [device] * len(streams), "streams": streams}))
    return path


def make_session(model_path: str | os.PathLike, ort_profile: dict | None = None,
                 threads: int | None = None, providers: list | None = None,
                 optimized_model_filepath: str | os.PathLike | None = None,
                 external_initializers: dict | None = None, lead_member: int | None = None):
    """An InferenceSession over ``model_path`` with the profile's settings.

    ``external_initializers``: see :func:`load_external_initializers`; referenced only until
    the session exists (ORT copies them).
    ``lead_member`` (parallel mode only): the member whose branch gets stream 0 to itself
    (the fp32 member); None: the last member.
    """
    ort = _ort()
    prof = ort_profile or {}
    wanted = list(providers or prof.get("providers") or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BundleError(f"ONNX Runtime here lacks execution provider(s) {', '.join(missing)} "
                          f"(available: {', '.join(available)}); install an onnxruntime build "
                          "with them, or export the bundle again for a target profile whose "
                          "[onnxruntime] providers this machine has")
    externals = load_external_initializers(model_path, external_initializers)
    n_packed = len(externals)
    keep = None
    if externals:
        arrays = [np.ascontiguousarray(a) for a in externals.values()]
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        keep = (arrays, values)

    def options(optimized=None):
        so = session_options(prof, threads, optimized)
        if keep:
            so.add_external_initializers(list(externals), keep[1])
        return so

    def create(so):
        try:
            return ort.InferenceSession(str(model_path), so, providers=wanted)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BundleError(f"ONNX Runtime cannot load {model_path} ({first}); re-export "
                              "the bundle") from None

    so = options(optimized_model_filepath)
    streams = 1
    if so.execution_mode == ort.ExecutionMode.ORT_PARALLEL:
        work = Path(tempfile.mkdtemp(prefix="edgempir-ort-"))
        try:
            part = branch_partition(model_path, options, create, so.inter_op_num_threads,
                                    lead_member, work)
            if part is not None:
                so.add_session_config_entry(PARTITION_KEY, str(part))
                streams = len(json.loads(part.read_text())["streams"])
            with _quiet_stdout():
                session = create(so)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        session = create(so)
    # ``keep`` (the arrays and OrtValues) goes out of scope here: ORT holds its own copy
    session.edgempir_packed = n_packed
    session.edgempir_streams = streams
    return session


def write_optimized_graph(model_path: str | os.PathLike, out_path: str | os.PathLike,
                          ort_profile: dict | None = None, threads: int | None = 1,
                          external_initializers: dict | None = None) -> Path:
    """Save the graph ONNX Runtime runs after its optimisations (for inspection only).

    Packed weights are supplied as for any session (:func:`load_external_initializers`);
    ORT writes them into the optimised graph as ordinary initializers.
    """
    make_session(model_path, ort_profile, threads=threads, optimized_model_filepath=out_path,
                 external_initializers=external_initializers)
    return Path(out_path)


class OrtModel:
    """One ONNX Runtime session over an ensemble or member file of a bundle."""

    def __init__(self, model_path: Path, kind: str, ort_profile: dict | None = None,
                 threads: int | None = None, providers: list | None = None,
                 input_name: str = INPUT_NAME, external_initializers: dict | None = None,
                 lead_member: int | None = None):
        self.path = Path(model_path)
        self.kind = kind  # "ensemble" or "member"
        self.input_name = input_name
        self.threads = threads
        self.session = make_session(self.path, ort_profile, threads, providers,
                                    external_initializers=external_initializers,
                                    lead_member=lead_member)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name (the ensemble's ``accepted`` included)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        named = self.run_outputs(x)
        outs = [named[n] for n in self.output_names]
        if self.kind == "ensemble":
            return (np.asarray(named[CLASS_IDS], dtype=np.int64),
                    np.asarray(named[MEMBER_LOGITS], dtype=np.float32))
        logits = np.asarray(outs[0], dtype=np.float32)
        return logits.argmax(axis=1).astype(np.int64), logits

    def info(self) -> dict:
        ort = _ort()
        so = self.session.get_session_options()
        return {"runtime": "onnxruntime", "version": ort.__version__,
                "providers": self.session.get_providers(),
                "threads": so.intra_op_num_threads or self.threads or 0,
                "inter_op_threads": so.inter_op_num_threads,
                "execution_mode": "parallel" if so.execution_mode ==
                ort.ExecutionMode.ORT_PARALLEL else "sequential",
                "packed_initializers": int(getattr(self.session, "edgempir_packed", 0)),
                "streams": int(getattr(self.session, "edgempir_streams", 1)),
                "device": ort.get_device(), "model": self.path.name}

    def memory_info(self) -> dict | None:
        return None  # ONNX Runtime's CPU provider does not report its own allocations
