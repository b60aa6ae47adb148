"""Evaluation under torchrun (edgempir/eval/shard.py): per-image results that do not depend
on how the images are shared over the ranks. Real torchrun processes, gloo on 127.0.0.1 at
a free port, each stopped by a timeout (the helper of test_distributed.py)."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch


def _training_tests():
    """test_distributed.py's torchrun helpers (reused, not copied)."""
    spec = importlib.util.spec_from_file_location(
        "edgempir_distributed_training_tests", Path(__file__).with_name("test_distributed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _training_tests()
free_port = _helpers.free_port
#: one evaluation (about a minute on an idle 2-core machine; much longer on a loaded one)
TIMEOUT_S = 900


def torchrun(*args, nproc=2):
    return _helpers.torchrun(*args, nproc=nproc, timeout=TIMEOUT_S)

# every kind of work that is shared: an attack seeded per image (pgd), a cascade of our own
# (vote-pgd, which the reject policies need), a batch-coupled torchattacks cascade
# (apgd-ce), the masking checks, the reject policies and the slow-path measurement
# (eps 0.02: the synthetic run's images survive PGD there, so every cascade has work)
ARGS = ("--config", "quick", "--n-images", "12", "--eps", "0.02", "--attacks",
        "pgd,vote-pgd,apgd-ce", "--threads", "1", "--json")
#: what may differ between two evaluations of the same images
VOLATILE = ("seconds", "attack_seconds", "world_size", "rank_wait_seconds", "run")


def comparable(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def copy_run(synthetic_run, dest):
    shutil.copytree(synthetic_run, dest, ignore=shutil.ignore_patterns("eval"))
    return dest


@pytest.fixture(scope="module")
def one_process(synthetic_run, tmp_path_factory):
    """The reference: the same evaluation in one plain process."""
    run = copy_run(synthetic_run, tmp_path_factory.mktemp("one") / "run")
    proc = subprocess.run([sys.executable, "-m", "edgempir.cli", "eval", str(run), *ARGS],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, json.loads(proc.stdout)["reports"]["adaptive"]


def same_evaluation(run, reference_run, reference):
    report = json.loads((run / "eval" / "adaptive-quick.json").read_text())
    assert report["world_size"] == 2 and reference["world_size"] == 1
    # one wait per rank (seconds in collectives); none in one process
    assert len(report["rank_wait_seconds"]) == 2 and reference["rank_wait_seconds"] == [0.0]
    assert comparable(report) == comparable(reference)
    ours, theirs = (np.load(r / "eval" / "adv-adaptive.npz") for r in (run, reference_run))
    for key in ("input", "label", "index"):
        assert np.array_equal(ours[key], theirs[key]), key


@pytest.mark.slow   # one plain and one 2-rank evaluation: 3 min on 2 cores (-m slow)
def test_two_ranks_give_the_one_process_results(synthetic_run, one_process, tmp_path):
    reference_run, reference = one_process
    run = copy_run(synthetic_run, tmp_path / "run")
    proc = torchrun("eval", str(run), *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)  # rank 0 alone prints: one JSON document
    assert printed["reports"]["adaptive"]["world_size"] == 2
    same_evaluation(run, reference_run, reference)
    # rank 0 kept the joined runs; no rank left its batches behind
    partial = run / "eval" / "partial" / "adaptive-quick"
    assert (partial / "eps-0.02" / "pgd@surrogate.npz").is_file()
    assert not list(partial.rglob("*.rows-*.npz"))


def worker_pids(launcher_pid: int) -> list[int]:
    """The ranks torchrun started (its child processes)."""
    children = []
    for task in os.listdir(f"/proc/{launcher_pid}/task"):
        with open(f"/proc/{launcher_pid}/task/{task}/children") as f:
            children += [int(p) for p in f.read().split()]
    return children


@pytest.mark.slow
def test_resume_after_one_rank_is_killed(synthetic_run, one_process, tmp_path):
    reference_run, reference = one_process
    run = copy_run(synthetic_run, tmp_path / "run")
    first = tmp_path / "first-job.npz"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "edgempir.cli", "eval", str(run), *ARGS]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    done = run / "eval" / "partial" / "adaptive-quick" / "eps-0.02" / "pgd@surrogate.npz"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not done.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done.exists(), "the first attack run never finished"
        shutil.copy(done, first)
        os.kill(worker_pids(proc.pid)[-1], signal.SIGKILL)   # one rank dies
        assert proc.wait(timeout=TIMEOUT_S) != 0              # torchrun stops the other
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run / "eval" / "adaptive-quick.json").exists()
    again = torchrun("eval", str(run), *ARGS)
    assert again.returncode == 0, again.stderr[-3000:]
    # the finished run was reused, not recomputed, and the results are the same
    assert done.read_bytes() == first.read_bytes()
    same_evaluation(run, reference_run, reference)


def test_more_ranks_than_images_is_a_one_line_error(synthetic_run, tmp_path):
    run = copy_run(synthetic_run, tmp_path / "run")
    # --n-images: torchrun's parser would take --n for its own --nnodes, --node-rank, ...
    proc = torchrun("eval", str(run), "--config", "quick", "--n-images", "1", "--attacks", "pgd")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    # every rank refuses alike, in one line each; nothing written
    assert len(errors) == 2 and len(set(errors)) == 1, proc.stderr[-2000:]
    assert "2 ranks for 1 test images" in errors[0]
    assert not (run / "eval" / "adaptive-quick.json").exists()


# ---------------------------------------------------------------- in one process
def test_an_image_gets_the_same_attack_in_any_batch(synthetic_run):
    """The premise of sharding: with per-image seeds (ids) and every batch padded to
    MIN_ROWS, an image's PGD (random start, restarts judged by the vote) and vote-PGD do
    not depend on the other images of its batch."""
    from edgempir.attacks import make_attack
    from edgempir.data import load_dataset, to_float
    from edgempir.eval.shard import batch_independent
    from edgempir.rundir import load_run

    ens = load_run(synthetic_run)
    ds = load_dataset("synthetic")
    x = torch.from_numpy(to_float(ds.x_test[:12]))
    y = torch.from_numpy(ds.y_test[:12].astype(np.int64))
    ids = torch.arange(100, 112)
    pgd = make_attack("pgd", eps=0.3, seed=5, steps=5, restarts=2)
    vote = make_attack("vote-pgd", eps=0.3, seed=5, steps=5, targets=2)
    decide = ens.predict
    with batch_independent(ens.members):
        for attack, model in ((pgd, ens.surrogate()), (vote, ens)):
            whole = attack(model, x, y, decide=decide, ids=ids)
            parts = torch.cat([attack(model, x[s], y[s], decide=decide, ids=ids[s])
                               for s in (slice(0, 1), slice(1, 5), slice(5, 12))])
            assert torch.equal(whole, parts), attack.name
            # the seed still matters: other ids, other random starts
            assert not torch.equal(whole, attack(model, x, y, decide=decide, ids=ids + 1))


def test_coupled_attacks_keep_the_one_process_batches():
    from edgempir.eval.shard import Shard, chunks_of

    rows = np.arange(10)
    ranks = [Shard(r, 3) for r in range(3)]
    coupled = [chunks_of(s, rows, 4, coupled=True) for s in ranks]
    assert [[c.tolist() for c in part] for part in coupled] == [
        [[0, 1, 2, 3]], [[4, 5, 6, 7]], [[8, 9]]]
    shared = [np.concatenate(chunks_of(s, rows, 4, coupled=False)) for s in ranks]
    assert [len(p) for p in shared] == [4, 3, 3]
    assert np.array_equal(np.concatenate(shared), rows)


# rows of a cascade -> batches: one batch under 2 x MIN_ROWS rows, then up to COUPLED_PARTS
# (8) batches of MIN_ROWS (16) rows or more, then as many as --batch-size (250) needs
@pytest.mark.parametrize("n_rows, n_batches", [(5, 1), (40, 2), (200, 8), (3000, 12)])
def test_coupled_batches_do_not_depend_on_the_ranks_and_spread_over_them(n_rows, n_batches):
    from edgempir.eval.shard import Shard, chunks_of

    rows = np.arange(7, 7 + 2 * n_rows, 2)  # a cascade's rows: any increasing indices
    one = [b.tolist() for b in chunks_of(Shard(), rows, 250, coupled=True)]
    for world in (2, 3, 8):
        dealt = [b.tolist() for r in range(world)
                 for b in chunks_of(Shard(r, world), rows, 250, coupled=True)]
        assert sorted(dealt) == sorted(one)
    assert [r for b in one for r in b] == rows.tolist()
    sizes = [len(b) for b in one]
    assert max(sizes) <= 250 and max(sizes) - min(sizes) <= 1
    assert len(one) == n_batches
    # a query-only attack (Square) is never cut below its batch: its cost is per query
    assert len(chunks_of(Shard(), rows, 2000, coupled=True, min_rows=2000)) == \
        -(-n_rows // 2000)


def test_nproc_refuses_more_ranks_than_images_before_starting(synthetic_run, tmp_path, cli):
    run = copy_run(synthetic_run, tmp_path / "run")
    proc = cli("eval", str(run), "--config", "quick", "--n", "1", "--nproc", "2", check=False)
    assert proc.returncode == 2
    expected = ("Error: --nproc 2 for 1 test images: every rank needs at least one; use at "
                "most 1 ranks or a larger --n")
    assert proc.stderr.strip().splitlines() == [expected]
