"""Training under torchrun (edgempir.distributed): real torchrun processes, gloo on
127.0.0.1 at a free port, each run stopped by a timeout."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, launcher: tuple[str, ...] = (), timeout=TIMEOUT_S
             ) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m edgempir.cli ARGS`` on 127.0.0.1; the whole process
    group is killed if it outlives ``timeout``."""
    launcher = launcher or ("--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           *launcher, "-m", "edgempir.cli", *args]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"torchrun {' '.join(args)} ran past {timeout} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def member_tensors(run):
    return {p.name: load_file(p) for p in sorted((run / "members").iterdir())}


def one_process_run(tmp_path, **kw):
    from edgempir.members import parse_members
    from edgempir.train import TrainConfig, train

    cfg = TrainConfig(out=str(tmp_path / "single"), dataset="synthetic", arch="mnist",
                      members=parse_members("w2a4,fp32"), threads=1, **{"epochs": 1, **kw})
    train(cfg, progress=False)
    return tmp_path / "single"


@pytest.mark.slow
def test_members_strategy_is_bit_identical_to_one_process(tmp_path):
    out = tmp_path / "two-ranks"
    proc = torchrun("train", "--dataset", "synthetic", "--members", "w2a4,fp32", "--epochs",
                    "1", "--threads", "1", "--distributed", "members", "--json",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # rank 0 alone reports
    assert report["manifest"]["training"]["distributed"] == {
        "strategy": "members", "world_size": 2, "backend": "gloo"}
    log = (out / "train.log").read_text()
    # round-robin: each rank trained one member (rank 1's lines come from its own process)
    assert "member 0 (w2a4) epoch 1/1" in log and "member 1 (fp32) epoch 1/1" in log
    single = member_tensors(one_process_run(tmp_path))
    both = member_tensors(out)
    assert single.keys() == both.keys()
    for name, tensors in single.items():
        assert tensors.keys() == both[name].keys()
        for key, t in tensors.items():
            assert torch.equal(t, both[name][key]), f"{name} {key} differs"


def test_a_refusal_on_rank_zero_stops_every_rank_in_one_line(tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    proc = torchrun("train", "--dataset", "synthetic", "--bits", "2,32", "--epochs", "1",
                    "--out", str(out))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 2 and all("already exists" in e for e in errors), proc.stderr[-2000:]
    # without torchrun the flag says what it needs
    solo = cli("train", "--dataset", "synthetic", "--distributed", "members", "--out",
               str(tmp_path / "x"), check=False)
    assert solo.returncode == 2 and "runs under torchrun" in solo.stderr
    assert len(solo.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_nodes_rendezvous_on_localhost(tmp_path):
    """The multi-node form: two torchrun agents (one rank each) meet at a c10d endpoint."""
    port = free_port()
    out = tmp_path / "nodes"
    args = ("train", "--dataset", "synthetic", "--members", "w2a4,fp32", "--epochs", "1",
            "--threads", "1", "--distributed", "members", "--json", "--out", str(out))

    def node(rank):
        launcher = ("--nnodes", "2", "--node-rank", str(rank), "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "edgempir-test")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
               *launcher, "-m", "edgempir.cli", *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"},
                                start_new_session=True)

    nodes = [node(0), node(1)]
    try:
        results = [p.communicate(timeout=TIMEOUT_S) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert all(p.returncode == 0 for p in nodes), results[0][1][-2000:] + results[1][1][-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["distributed"]["world_size"] == 2


@pytest.mark.slow
def test_ddp_two_ranks_learn_like_one_process(tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun("train", "--dataset", "synthetic", "--members", "w2a4,fp32", "--epochs",
                    "2", "--threads", "1", "--distributed", "ddp", "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(proc.stdout)["manifest"]
    assert ddp["training"]["distributed"] == {"strategy": "ddp", "world_size": 2,
                                             "backend": "gloo"}
    single = json.loads((one_process_run(tmp_path, epochs=2) / "manifest.json").read_text())
    for m_ddp, m_one in zip(ddp["members"], single["members"]):
        losses = [h["loss"] for h in m_ddp["history"]]
        assert losses[1] < losses[0], losses
        assert abs(m_ddp["clean_accuracy"] - m_one["clean_accuracy"]) <= 0.03


@pytest.mark.slow
def test_ddp_resumes_after_one_rank_is_killed(tmp_path):
    """SIGKILL one rank once member 0's first epoch is saved: torchrun stops the other,
    and the same command with --resume continues from that checkpoint."""
    import time

    import psutil

    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--members", "w2a4,fp32", "--epochs", "2",
            "--threads", "1", "--distributed", "ddp", "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "edgempir.cli", *args]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - closed below
    agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    ckpt = tmp_path / "run.partial" / "checkpoints" / "0-w2a4.safetensors"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not ckpt.is_file() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ckpt.is_file(), (tmp_path / "agent.log").read_text()[-3000:]
        ranks = [p for p in psutil.Process(agent.pid).children(recursive=True)
                 if "edgempir.cli" in " ".join(p.cmdline())]
        assert len(ranks) == 2
        os.kill(ranks[1].pid, signal.SIGKILL)
        agent.wait(timeout=TIMEOUT_S)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        log.close()
    assert agent.returncode != 0 and not (out / "manifest.json").exists()
    proc = torchrun(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "member 0 (w2a4): resuming after epoch" in log
    assert json.loads((out / "manifest.json").read_text())["training"]["distributed"][
        "strategy"] == "ddp"
