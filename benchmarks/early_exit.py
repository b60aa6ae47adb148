"""perf.py's early-exit section (issue 18): the deployed early-exit graph vs the full graph
vs the fp32 member, side by side in one process.

Exports two x86 bundles from the run, identical but for ``[export] vote`` (``early-exit``,
the x86 default, and ``full``), then times, alternating blocks of calls (bench's
``compare_latency``), at batch 1 and 32:

- the fp32 member alone (the baseline of every ratio);
- the full graph (clean images; its cost does not depend on the input);
- the early-exit graph on the clean set, the shipped adversarial set and the worst case
  (batches of rows on which the deployed graph ran every member);
- the same cascade as a plain Python loop over three member sessions (what the graph must
  beat), on the clean set;
- the early-exit and full graphs with the low-bit branches side by side
  (``inter_op_threads`` = usable cores, per-branch streams) instead of one after another.

It also checks that the early-exit graph decides exactly as the full graph on both sets,
and records the slow-path fraction, load average, threads and versions.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import numpy as np


def _profile_file(work: Path, vote: str) -> Path:
    """The x86 profile with ``[export] vote`` set (a user profile file)."""
    from edgempir.targets.host.profiles import PROFILES_DIR

    text = (PROFILES_DIR / "x86.toml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.startswith("vote ="))
    text = text.replace("[export]\n", f'[export]\nvote = "{vote}"\n', 1)
    path = work / f"x86-{vote}.toml"
    path.write_text(text.replace('name = "x86"', f'name = "x86-{vote}"', 1))
    return path


def export_pair(run: Path, work: Path) -> dict[str, Path]:
    from edgempir.targets.host.export import export_bundle

    out = {}
    for vote in ("early-exit", "full"):
        out[vote] = work / f"x86-{vote}"
        export_bundle(run, str(_profile_file(work, vote)), out[vote], n_calib=64,
                      progress=False)
    return out


class PythonCascade:
    """The three-member cascade as a Python loop over member sessions (issue 18's
    throwaway measurement): both low-bit members, then the fp32 member on the open rows."""

    def __init__(self, sessions: list, order: list[int]):
        self.sessions, self.order = sessions, order

    def run(self, x: np.ndarray):
        from edgempir.vote import cascade

        return cascade(lambda i, rows: self.sessions[i].run(x[rows])[1], len(x),
                       len(self.sessions), self.order, self.order[-1])[0]


def _sets(bundle) -> dict[str, np.ndarray]:
    from edgempir.calib import read_set

    return {n: read_set(bundle.calib_file(n))["input"] for n in ("clean", "adv-adaptive")}


def measure(run: Path, s, cores: int) -> dict:
    from dataclasses import replace

    from edgempir.targets.device import early_exit as EE
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import open_model
    from edgempir.targets.device.timing import compare_latency

    with tempfile.TemporaryDirectory(prefix="edgempir-ee-") as tmp:
        paths = export_pair(run, Path(tmp))
        ee, full = verify_bundle(paths["early-exit"]), verify_bundle(paths["full"])
        sets = _sets(ee)
        fp = ee.fp32_member if ee.fp32_member is not None else ee.reference_member
        open_ee, open_full = open_model(ee, "ensemble", threads=1), \
            open_model(full, "ensemble", threads=1)
        # decisions and the slow path, on both sets
        checks, worst = EE.check_sets(open_ee, lambda i: open_model(ee, i, threads=1), ee,
                                      sets, 256)
        for c in checks:
            full_ids = np.concatenate([open_full.run(sets[c["name"]][k:k + 256])[0]
                                       for k in range(0, len(sets[c["name"]]), 256)])
            ids, _ = EE.predict_masked(open_ee, sets[c["name"]], 256)
            c["same_as_full_graph"] = bool(np.array_equal(ids, full_ids))
        members = [open_model(ee, i, threads=1) for i in range(len(ee.members))]
        order = ee.manifest["vote_execution"]["order"]
        parallel = {**ee.profile["onnxruntime"], "inter_op_threads": max(cores, 2)}
        def par(b):  # the library's session (lead branch as deployed), parallel streams
            return open_model(replace(b, profile={**b.profile, "onnxruntime": parallel}),
                              "ensemble", threads=1)

        clean, rot = sets["clean"], EE.Rotating  # every runner cycles through its set
        runners = {
            "fp32_member": rot(members[fp], clean),
            "full_graph": rot(open_full, clean),
            "early_exit_clean": rot(open_ee, clean),
            "early_exit_adversarial": rot(open_ee, sets["adv-adaptive"]),
            "early_exit_worst_case": rot(open_ee, worst),
            "python_cascade_clean": rot(PythonCascade(members, order), clean),
            "early_exit_clean_parallel": rot(par(ee), clean),
            "full_graph_parallel": rot(par(full), clean),
        }
        load_start = [round(v, 2) for v in os.getloadavg()]
        rounds = []
        for _ in range(s.latency_instances):  # repeated rounds: medians over them
            rounds.append(compare_latency(runners, sets["clean"], s.latency_batches,
                                          s.latency_warmup, s.latency_repeats,
                                          s.latency_cap_s))
        load_end = [round(v, 2) for v in os.getloadavg()]
    return _summary(rounds, checks, worst, order, cores, load_start, load_end)


def _summary(rounds, checks, worst, order, cores, load_start, load_end) -> dict:
    batches = {}
    for k, row in enumerate(rounds[0]):
        b = row["batch_size"]
        names = [n for n in row if n != "batch_size"]
        ms = {n: statistics.median(r[k][n]["p50_ms"] for r in rounds) for n in names}
        # each round's ratio to the fp32 member of the same round, then the median
        ratio = {n: statistics.median(r[k][n]["p50_ms"] / r[k]["fp32_member"]["p50_ms"]
                                      for r in rounds) for n in names}
        batches[str(b)] = {"ms": ms, "vs_fp32": ratio}
    return {"what": "p50 of single calls, alternating blocks of 10 calls in one process, "
                    "median over rounds; ratios to the fp32 member's p50 in the same round",
            "rounds": len(rounds), "order": order, "sets": checks,
            "worst_case_rows": len(worst), "parallel_inter_op_threads": max(cores, 2),
            "load_average": {"start": load_start, "end": load_end}, "batches": batches}


def fmt(r: dict) -> list[str]:
    lines = [(f"Early-exit vote (issue 18): p50 / fp32 member p50, median of {r['rounds']} "
              f"rounds; load {r['load_average']['start']} -> {r['load_average']['end']}")]
    names = list(next(iter(r["batches"].values()))["ms"])
    for b, row in r["batches"].items():
        lines.append(f"  batch {b}: " + ", ".join(
            f"{n} {row['ms'][n]:.3f} ms ({row['vs_fp32'][n]:.2f}x)" for n in names))
    for c in r["sets"]:
        lines.append(f"  {c['name']}: slow path on {100 * c['slow_path_fraction']:.1f}% of "
                     f"{c['n']}; decisions = full vote: {c['decisions_identical']}, = full "
                     f"graph: {c['same_as_full_graph']}")
    return lines
