"""Distributed evaluation (issue 17): 2 ranks x 1 thread vs 1 rank x 1 thread, wall time.

    python benchmarks/dist_eval.py RUN [--n 300] [--config quick] [--protocol adaptive]
                                   [--ranks 2] [--out results-dist-eval.json]

Copies RUN twice (its eval/ left out, so nothing is resumed), evaluates one copy in one
process (`edgempir eval COPY ... --threads 1`) and the other under
`torchrun --nproc-per-node RANKS ... --threads 1`, one after the other, and prints the
wall times, their ratio, whether the per-image results are identical (the reports apart
from timings, world size and path; the adversarial examples), the load average before and
after, the cores, threads and versions. The run itself is never written to.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOLATILE = ("seconds", "attack_seconds", "world_size", "rank_wait_seconds", "run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def same_results(a: Path, b: Path, protocols: list[str], config: str) -> bool:
    for proto in protocols:
        ra, rb = (json.loads((r / "eval" / f"{proto}-{config}.json").read_text())
                  for r in (a, b))
        if {k: v for k, v in ra.items() if k not in VOLATILE} != \
                {k: v for k, v in rb.items() if k not in VOLATILE}:
            return False
        na, nb = (np.load(r / "eval" / f"adv-{proto}.npz") for r in (a, b))
        if not all(np.array_equal(na[k], nb[k]) for k in ("input", "label", "index")):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--config", default="quick")
    ap.add_argument("--protocol", default="adaptive")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    protocols = ["paper", "adaptive"] if args.protocol == "both" else [args.protocol]
    # --n-images: torchrun's parser takes --n for an abbreviation of its own options
    common = ["--protocol", args.protocol, "--config", args.config, "--n-images", str(args.n),
              "--threads", "1"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dist-eval-") as tmp:
        copies = []
        for name in ("one", "ranks"):
            dest = Path(tmp) / name / Path(args.run).name
            shutil.copytree(args.run, dest, ignore=shutil.ignore_patterns("eval",
                                                                           "checkpoints"))
            copies.append(dest)
        one = timed([sys.executable, "-m", "edgempir.cli", "eval", str(copies[0]), *common])
        many = timed([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                      str(args.ranks), "--master-addr", "127.0.0.1", "--master-port",
                      str(free_port()), "-m", "edgempir.cli", "eval", str(copies[1]),
                      *common])
        identical = same_results(copies[0], copies[1], protocols, args.config)
        waits = {p: json.loads((copies[1] / "eval" / f"{p}-{args.config}.json").read_text())
                 ["rank_wait_seconds"] for p in protocols}
    result = {
        "what": f"edgempir eval --protocol {args.protocol} --config {args.config} --n "
                f"{args.n} --threads 1: 1 process vs torchrun --nproc-per-node {args.ranks}",
        "one_rank_s": round(one, 1), "ranks": args.ranks, "ranks_s": round(many, 1),
        "ratio": round(many / one, 3), "identical_per_image_results": identical,
        "rank_wait_seconds": waits,
        **machine_record(load_before),
    }
    print_and_save(result, args.out)


def machine_record(load_before: tuple[float, ...]) -> dict:
    """What a figure was measured on: threads, cores, load before and now, versions."""
    import torch

    import edgempir

    return {"threads_per_rank": 1, "cores": os.cpu_count(),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()],
            "versions": {"edgempir": edgempir.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "cpu": platform.processor() or platform.machine()}


def print_and_save(result: dict, out: str | None) -> None:
    print(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
