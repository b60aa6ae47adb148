"""Two ``edgempir bench`` processes on one bundle at the same time.

Both read the same files, write their report to the same default path next to the bundle
(atomically, under temporary names of their own), run their soak and their memory child
processes side by side. Both must finish with exit 0 and a valid JSON report, the report
file must be one of the two (never a mix), and the bundle must be left as it was.
The long soak (>= 10 minutes) is scripts/soak.sh, not run in CI (docs/RELIABILITY.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import testkit as H

FAST = ("--batch-sizes", "1,4", "--repeats", "15", "--warmup", "2", "--square-queries", "20",
        "--square-n", "8", "--n", "32", "--duration", "2", "--json")




def test_two_bench_processes_on_one_bundle(x86_bundle, tmp_path):
    from edgempir.targets.device.bench import validate_report

    bundle = tmp_path / "syn-x86"
    shutil.copytree(x86_bundle, bundle)
    before = H.file_stamps(bundle)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "edgempir.cli", "bench", str(bundle),
                               *FAST, "--threads", "1", "--seed", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    reports = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        report = json.loads(out)
        assert validate_report(report) == [], validate_report(report)
        assert report["bundle"]["verified"] and report["soak"]["windows"]
        reports.append(report)
    assert {r["settings"]["seed"] for r in reports} == {0, 1}
    # the shared default report path holds one whole report: the one written last
    written = json.loads((tmp_path / "syn-x86-bench.json").read_text())
    assert written in reports
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob(".*.tmp-*"))
    assert H.file_stamps(bundle) == before, "bench must not write inside the bundle"
