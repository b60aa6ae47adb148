"""Distributed training, strategy members (issue 17): R ranks x 1 thread vs 1 process x 1
thread, wall time, and whether the members are bit-identical.

    python benchmarks/dist_train.py [--dataset fashion-mnist] [--bits 2,4,32] [--epochs 1]
                                    [--ranks 2] [--out results-dist-train.json]

Trains the same ensemble twice into a temporary folder, one after the other: once in one
process (`edgempir train ... --threads 1`) and once under `torchrun --nproc-per-node RANKS
-m edgempir.cli train --distributed members ... --threads 1`, and prints both wall times,
their ratio, whether every member's weights file is byte-identical, the load average before
and after, the cores, threads and versions.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/dist_eval.py
from dist_eval import free_port, machine_record, print_and_save, timed


def member_hashes(run: Path) -> list[str]:
    """sha256 of every member's tensors (names, dtypes, shapes, bytes): the files' metadata
    holds each epoch's timings, which differ between any two runs."""
    from safetensors.numpy import load_file

    hashes = []
    for path in sorted((run / "members").glob("*.safetensors")):
        h = hashlib.sha256()
        for name, value in sorted(load_file(str(path)).items()):
            h.update(f"{name}{value.dtype}{value.shape}".encode())
            h.update(value.tobytes())
        hashes.append(h.hexdigest())
    return hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--bits", default="2,4,32")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    common = ["--dataset", args.dataset, "--bits", args.bits, "--epochs", str(args.epochs),
              "--threads", "1", "--json"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dist-train-") as tmp:
        one_run, ranks_run = Path(tmp) / "one", Path(tmp) / "ranks"
        one = timed([sys.executable, "-m", "edgempir.cli", "train", *common,
                     "--out", str(one_run)])
        many = timed([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                      str(args.ranks), "--master-addr", "127.0.0.1", "--master-port",
                      str(free_port()), "-m", "edgempir.cli", "train", "--distributed",
                      "members", *common, "--out", str(ranks_run)])
        identical = member_hashes(one_run) == member_hashes(ranks_run) != []
    result = {
        "what": f"edgempir train --dataset {args.dataset} --bits {args.bits} --epochs "
                f"{args.epochs} --threads 1: 1 process vs torchrun --nproc-per-node "
                f"{args.ranks} --distributed members",
        "one_process_s": round(one, 1), "ranks": args.ranks, "ranks_s": round(many, 1),
        "ratio": round(many / one, 3), "members_bit_identical": identical,
        **machine_record(load_before),
    }
    print_and_save(result, args.out)

if __name__ == "__main__":
    main()
