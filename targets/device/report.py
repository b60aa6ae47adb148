"""The bench report: its JSON schema (checked by :func:`validate_report`, documented field by
field in docs/BENCH.md) and the readable table (device side; numpy only).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgempir.tables import format_table, pct

SCHEMA = "edgempir.bench"
# 2 (issue 18): latency rows gain ensemble_adversarial / ensemble_worst_case and their p50
# ratios; the report gains ``early_exit``; accuracy's member_accuracy is over the rows a
# member ran on
SCHEMA_VERSION = 2

def jsonable(obj: Any) -> Any:
    """Make runtime info JSON-safe: numpy scalars, tuples, paths, non-finite floats."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------- schema
# The JSON report's shape: a key maps to a type (or tuple of types), a nested schema dict,
# or a one-element list holding the schema of each list item. ``None`` in a tuple allows
# null. docs/BENCH.md describes every key; a test keeps the two in step.
_NUM = (int, float)
_LAT = {"batch_size": int, "repeats": int, "p50_ms": _NUM, "p90_ms": _NUM, "p99_ms": _NUM,
        "max_ms": _NUM, "mean_ms": _NUM, "throughput_img_s": (int, float, None)}
_MEM = {"which": str, "batch_size": int, "runs": int, "baseline_rss_bytes": int,
        "loaded_rss_bytes": int, "final_rss_bytes": int, "peak_rss_bytes": (int, None),
        "peak_rss_before_load_bytes": (int, None), "peak_reset": bool,
        "model_peak_bytes": (int, None),
        "runtime": (dict, None)}
_SQ = {"n": int, "clean_accuracy": _NUM, "robust_accuracy": _NUM, "success_rate": _NUM,
       "queries_mean_success": (int, float, None), "queries_median_success": (int, float, None),
       "queries_total": int, "iterations": int, "max_perturbation": _NUM, "seconds": _NUM}
SCHEMA_SPEC: dict = {
    "schema": str, "schema_version": int, "created": str, "edgempir_version": str,
    "bundle": {"path": str, "name": str, "target": str, "runtime": str, "verified": bool,
               "input_name": str, "input_shape": [int], "num_classes": int,
               "members": [{"index": int, "spec": str, "weight_bits": (int, None),
                            "act_bits": (int, None)}],
               "reference_member": int, "fp32_member": (int, None), "baseline_member": int,
               "eval": {"protocol": (str, None), "config": (str, None),
                        "eps": (int, float, list, None), "adv_eps": (int, float, None),
                        "norm": (str, None)}},
    "machine": {"arch": str, "cpu_model": (str, None), "board": (str, None),
                "cores_logical": (int, None), "cores_physical": (int, None),
                "cores_usable": (int, None), "memory_total_bytes": int, "gpus": [str],
                "os": str, "hostname": str, "python": str, "virtualized": bool,
                "load_average": ([_NUM], None),
                "emulation": {"emulated": bool, "emulator": (str, None), "evidence": [str]}},
    "runtime": {"name": str, "versions": dict, "providers": (list, None),
                "threads": (int, None), "info": dict},
    "settings": {"batch_sizes": [int], "warmup": int, "repeats": int, "time_cap_s": _NUM,
                 "threads": (int, None), "n": (int, None), "square_queries": int,
                 "square_n": int, "square_p_init": _NUM, "duration_s": _NUM, "memory": bool,
                 "seed": int},
    "latency": [{"batch_size": int, "ensemble": _LAT, "fp32_member": _LAT,
                 "overhead_p50": (int, float, None), "overhead_mean": (int, float, None),
                 "ensemble_adversarial": (_LAT, None), "ensemble_worst_case": (_LAT, None),
                 "overhead_p50_adversarial": (int, float, None),
                 "overhead_p50_worst_case": (int, float, None)}],
    "early_exit": ({"mode": str, "order": [int], "reference_member": int,
                    "sets": [{"name": str, "n": int, "slow_path_fraction": _NUM,
                              "members_run_mean": _NUM, "member_ran_fraction": [_NUM],
                              "full_vote_mismatches": int, "decisions_identical": bool}],
                    "worst_case_rows": int, "worst_case_from": str, "note": str}, None),
    "memory": {"disk": {"ensemble_onnx_bytes": (int, None),
                        "members": [{"index": int, "spec": str, "file": str,
                                     "onnx_bytes": (int, None), "weight_bytes": (dict, None)}],
                        "ensemble_weight_bytes": {"true_bits": (int, None),
                                                  "stored": (int, None),
                                                  "float32": (int, None)},
                        "overhead_onnx": (int, float, None)},
               "ensemble": (_MEM, None), "fp32_member": (_MEM, None),
               "overhead_peak_rss": (int, float, None), "overhead_model_peak": (int, float, None)},
    "accuracy": {"drift_threshold_points": _NUM, "drift": bool,
                 "sets": [{"name": str, "description": str, "n": int, "n_set": int,
                           "same_set_as_host": bool, "deployed_accuracy": (int, float, None),
                           "host_accuracy": (int, float, None),
                           "drift_points": (int, float, None), "drift": bool,
                           "member_accuracy": [(int, float, None)],
                           "vote_agreement": (int, float, None),
                           "reject_policy": (str, None),
                           "deployed_rejection_rate": (int, float, None),
                           "host_rejection_rate": (int, float, None),
                           "rejection_drift_points": (int, float, None),
                           "rejection_drift": bool}]},
    "square": ({"attack": str, "norm": str, "eps": _NUM, "queries": int, "p_init": _NUM,
                "n": int, "seed": int, "loss": str, "success": str, "description": str,
                "ensemble": _SQ, "fp32_member": _SQ}, None),
    "soak": ({"duration_s": _NUM, "batch_size": int, "window_s": _NUM,
              "windows": [{"t_s": _NUM, "calls": int, "p50_ms": _NUM, "p99_ms": _NUM,
                           "max_ms": _NUM, "rss_bytes": int}],
              "latency_drift": (int, float, None), "latency_drift_flag": bool,
              "rss_growth_bytes": int, "rss_growth_bytes_per_min": (int, float, None),
              "rss_growth_flag": bool}, None),
    "warnings": [{"code": str, "message": str, "doc": str}],
    "timings_s": dict,
}


def validate_report(report: Any, spec: Any = None, where: str = "report") -> list[str]:
    """Problems of ``report`` against :data:`SCHEMA_SPEC` (empty list: valid).

    Every key of the schema is required (nullable ones may be null); unknown keys are
    errors too, so the docs cannot fall behind the code silently.
    """
    spec = SCHEMA_SPEC if spec is None else spec
    if where == "report" and isinstance(report, dict) and (
            report.get("schema") != SCHEMA or report.get("schema_version") != SCHEMA_VERSION):
        return [(f"report: schema is {report.get('schema')!r} version "
                 f"{report.get('schema_version')!r}, expected {SCHEMA!r} {SCHEMA_VERSION}")]
    return _check(report, spec, where)


def _check(value: Any, spec: Any, where: str) -> list[str]:
    if isinstance(spec, tuple) and any(isinstance(s, (dict, list)) for s in spec):
        if value is None and None in spec:
            return []
        inner = [s for s in spec if s is not None]
        errs = [_check(value, s, where) for s in inner]
        return [] if any(not e for e in errs) else errs[0]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        problems: list[str] = [f"{where}.{k}: missing" for k in spec if k not in value]
        problems += [f"{where}.{k}: not in the schema" for k in value if k not in spec]
        for k, s in spec.items():
            if k in value:
                problems += _check(value[k], s, f"{where}.{k}")
        return problems
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in _check(v, spec[0], f"{where}[{i}]")]
    types = spec if isinstance(spec, tuple) else (spec,)
    if value is None:
        return [] if None in types else [f"{where}: null not allowed"]
    py = tuple(t for t in types if t is not None)
    if isinstance(value, bool) and bool not in py:
        return [f"{where}: expected {'/'.join(t.__name__ for t in py)}, got bool"]
    if not isinstance(value, py):
        return [(f"{where}: expected {'/'.join(t.__name__ for t in py)}, got "
                 f"{type(value).__name__}")]
    return []


def schema_keys(spec: Any = None, prefix: str = "") -> list[str]:
    """Dotted paths of every key in the schema (``latency[].ensemble.p50_ms``)."""
    spec = SCHEMA_SPEC if spec is None else spec
    out = []
    if isinstance(spec, tuple):
        for s in spec:
            if isinstance(s, (dict, list)):
                out += schema_keys(s, prefix)
        return out
    if isinstance(spec, list):
        return schema_keys(spec[0], prefix + "[]")
    if isinstance(spec, dict):
        for k, s in spec.items():
            path = f"{prefix}.{k}" if prefix else k
            out.append(path)
            out += schema_keys(s, path)
    return out


# --------------------------------------------------------------------------- table
def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _early_exit_lines(ee: dict, b: dict) -> str:
    ref = ee["reference_member"]
    lines = [(f"Early-exit vote (members in order {ee['order']}; member {ref} "
              f"({b['members'][ref]['spec']}) runs only where the others leave the vote "
              "open):")]
    for s in ee["sets"]:
        same = ("decisions identical to the full vote" if s["decisions_identical"] else
                f"DECISIONS DIFFER from the full vote on {s['full_vote_mismatches']} images")
        lines.append(f"  {s['name']}: slow path (reference run) on "
                     f"{pct(s['slow_path_fraction'])} of {s['n']} images, "
                     f"{s['members_run_mean']:.2f} members run per image; {same}")
    lines.append(f"  worst case: {ee['worst_case_rows']} slow-path rows, repeated; NOTE: "
                 f"{ee['note']}")
    return "\n".join(lines)


def format_report(r: dict) -> str:
    """The readable table of a bench report: one block per measurement, then warnings."""
    b = r["bundle"]
    specs = "+".join(x["spec"] for x in b["members"])
    base = f"member {b['baseline_member']} ({b['members'][b['baseline_member']]['spec']})"
    out = _header_lines(r, specs)
    out += _latency_lines(r, specs, base)
    out += _memory_lines(r, base)
    out += _accuracy_lines(r["accuracy"])
    out += _square_lines(r["square"], specs, base)
    out += _soak_lines(r["soak"])
    for wmsg in r["warnings"]:
        out.append(f"warning [{wmsg['code']}]: {wmsg['message']} (see {wmsg['doc']})")
    out.append(f"bench took {r['timings_s']['total']:.1f} s")
    return "\n".join(out)


def _header_lines(r: dict, specs: str) -> list[str]:
    b, m, rt = r["bundle"], r["machine"], r["runtime"]
    emu = m["emulation"]
    out = [f"edgempir bench: {b['name']} (target {b['target']}, {specs}, vote), sha256 verified",
           f"machine: {m['arch']}, {m['cpu_model'] or 'unknown CPU'}, {m['cores_logical']} "
           f"logical cores ({m['cores_usable']} usable), "
           f"{m['memory_total_bytes'] / 2**30:.1f} GiB"
           + (f", GPU {', '.join(m['gpus'])}" if m["gpus"] else "")
           + (", virtual machine" if m["virtualized"] else "")
           + (f", load {m['load_average'][0]}" if m["load_average"] else ""),
           f"runtime: {rt['name']} {rt['versions'].get(rt['name'], '?')} ("
           + ", ".join(f"{k} {v}" for k, v in rt["versions"].items() if k != rt["name"])
           + f"), providers {', '.join(rt['providers'] or ['-'])}, threads "
           + (f"{rt['threads']}" if rt["threads"] else "runtime default (one per physical core)")
           + f", python {m['python']}"]
    if emu["emulated"]:
        out.append("EMULATED: " + "; ".join(emu["evidence"])
                   + " -- latency figures are the emulator's, not the device's")
    return out + [""]


def _latency_lines(r: dict, specs: str, base: str) -> list[str]:
    ee = r.get("early_exit")
    clean_label = f"ensemble ({specs})" + (", clean set" if ee else "")
    rows = []
    for row in r["latency"]:
        for name, label, ratio in (
                ("ensemble", clean_label, "overhead_p50"),
                ("ensemble_adversarial", "  same, adversarial set", "overhead_p50_adversarial"),
                ("ensemble_worst_case", "  same, WORST CASE (all slow path)",
                 "overhead_p50_worst_case"),
                ("fp32_member", base, None)):
            s = row.get(name)
            if s is None:
                continue
            rows.append([s["batch_size"], label, f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}",
                         f"{s['p99_ms']:.3f}", f"{s['max_ms']:.3f}",
                         f"{s['throughput_img_s']:.0f}" if s["throughput_img_s"] else "-",
                         _ratio(row[ratio]) if ratio else "1.00x", s["repeats"]])
    out = [format_table(["batch", "model", "p50 ms", "p90 ms", "p99 ms", "max ms", "img/s",
                         "p50 vs fp32", "calls"], rows,
                        title="Latency after warm-up, single stream (ensemble and baseline "
                              "alternating)")]
    if ee:
        out.append(_early_exit_lines(ee, r["bundle"]))
    return out + [""]


def _memory_lines(r: dict, base: str) -> list[str]:
    b, mem = r["bundle"], r["memory"]
    d = mem["disk"]
    rows = []
    for name, label in (("ensemble", "ensemble"), ("fp32_member", base)):
        mm = mem[name]
        onnx = d["ensemble_onnx_bytes"] if name == "ensemble" else next(
            (x["onnx_bytes"] for x in d["members"] if x["index"] == b["baseline_member"]), None)
        rt_mem = (mm or {}).get("runtime") or {}
        rows.append([label, _mib((mm or {}).get("peak_rss_bytes")),
                     _mib((mm or {}).get("model_peak_bytes")), _mib(onnx),
                     ", ".join(f"{k} {v}" for k, v in rt_mem.items()) or "-"])
    w = d["ensemble_weight_bytes"]
    title = ("Memory (peak RSS of a fresh process running only that model at batch "
             f"{(mem['ensemble'] or {}).get('batch_size', '-')}; 'model' = peak minus the RSS "
             "after imports)")
    return [format_table(["model", "peak RSS", "model peak", "onnx on disk", "runtime"],
                         rows, title=title),
            (f"ensemble vs baseline: peak RSS {_ratio(mem['overhead_peak_rss'])}, model peak "
            f"{_ratio(mem['overhead_model_peak'])}, onnx bytes {_ratio(d['overhead_onnx'])}; "
            f"weights of all members: {_mib(w['true_bits'])} at true bit widths, "
            f"{_mib(w['stored'])} as stored, {_mib(w['float32'])} as float32"), ""]


def _accuracy_lines(acc: dict) -> list[str]:
    rows = []
    for s in acc["sets"]:
        flag = "DRIFT" if s["drift"] else ("subset" if not s["same_set_as_host"] else "ok")
        rows.append([s["name"], s["n"], pct(s["deployed_accuracy"]), pct(s["host_accuracy"]),
                     "-" if s["drift_points"] is None else f"{s['drift_points']:+.2f}", flag,
                     " ".join(pct(a) for a in s["member_accuracy"])])
    out = [format_table(["set", "n", "deployed", "host (PyTorch)", "drift pts", "",
                         "members (deployed)"], rows,
                        title="Accuracy of the deployed engine (the vote in the graph) vs "
                              f"the host's before export (drift flagged beyond "
                              f"{acc['drift_threshold_points']} points)")]
    out += [f"  {s['name']}: {s['description']}" for s in acc["sets"]]
    for s in acc["sets"]:
        if s["reject_policy"] is not None:
            drift = "-" if s["rejection_drift_points"] is None \
                else f"{s['rejection_drift_points']:+.2f} pts"
            out.append(f"  {s['name']}: rejection rate (policy {s['reject_policy']}, output "
                       f"'accepted'): deployed {pct(s['deployed_rejection_rate'])}, host "
                       f"{pct(s['host_rejection_rate'])}, drift {drift}"
                       f"{' DRIFT' if s['rejection_drift'] else ''}")
    return out + [""]


def _square_lines(sq: dict | None, specs: str, base: str) -> list[str]:
    if not sq:
        return []
    rows = []
    for name, label in (("ensemble", f"ensemble ({specs}, vote)"), ("fp32_member", base)):
        s = sq[name]
        rows.append([label, pct(s["clean_accuracy"]), pct(s["robust_accuracy"]),
                     "-" if s["queries_median_success"] is None
                     else f"{s['queries_median_success']:.0f}", f"{s['seconds']:.1f} s"])
    return [format_table(["model", "clean", "under attack", "median queries to break", "time"],
                         rows, title=f"Black-box robustness: {sq['description']}"), ""]


def _soak_lines(sk: dict | None) -> list[str]:
    if not sk:
        return []
    first, last = sk["windows"][0], sk["windows"][-1]
    return [(f"Soak: {sk['duration_s']:.0f} s at batch {sk['batch_size']}, "
            f"{len(sk['windows'])} windows: p50 {first['p50_ms']:.3f} -> "
            f"{last['p50_ms']:.3f} ms (drift {100 * (sk['latency_drift'] or 0):+.1f}%"
            f"{', FLAGGED' if sk['latency_drift_flag'] else ''}), RSS "
            f"{_mib(first['rss_bytes'])} -> {_mib(last['rss_bytes'])} (growth "
            f"{sk['rss_growth_bytes'] / 2**20:+.1f} MiB"
            f"{', FLAGGED' if sk['rss_growth_flag'] else ''})"), ""]
