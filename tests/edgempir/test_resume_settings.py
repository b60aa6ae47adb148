"""``train --resume`` refuses a run started with other settings (README: resume continues
the same run, never a different one), naming the settings that differ, touching nothing."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgempir import rundir
from edgempir.errors import RunDirError
from edgempir.members import parse_members
from edgempir.train import TrainConfig, train


def _started(tmp_path) -> tuple[TrainConfig, Path]:
    """A run killed after writing its config.json (what resume reads), nothing trained."""
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="synthetic", arch="mnist",
                      members=parse_members("w2a4,fp32"), epochs=2, batch_size=64, seed=0)
    work = rundir.partial_dir(Path(cfg.out))
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(cfg.to_json()))
    return cfg, work


@pytest.mark.parametrize("change, named", [
    ({"epochs": 3}, "epochs"),
    ({"seed": 1, "lr": 0.5}, "lr, seed"),
    ({"members": parse_members("w4a4,fp32")}, "members"),
    ({"augment": "hflip"}, "augment"),
])
def test_resume_with_changed_settings_is_refused(tmp_path, change, named):
    cfg, work = _started(tmp_path)
    with pytest.raises(RunDirError) as e:
        train(dataclasses.replace(cfg, **change), resume=True, progress=False,
              echo=lambda s: None)
    assert f"was started with other settings ({named})" in str(e.value)
    assert sorted(p.name for p in work.iterdir()) == ["config.json"]
    assert not Path(cfg.out).exists()


def test_resume_ignores_where_and_how_fast(tmp_path):
    """threads and data_dir do not change what is computed: not part of the settings."""
    cfg, _ = _started(tmp_path)
    moved = dataclasses.replace(cfg, threads=1, data_dir=str(tmp_path))
    assert moved.to_json() == cfg.to_json()


def test_resume_with_changed_settings_is_one_line_on_the_cli(tmp_path, cli):
    cfg, work = _started(tmp_path)
    proc = cli("train", "--dataset", "synthetic", "--members", "w2a4,fp32", "--epochs", "5",
               "--batch-size", "64", "--out", cfg.out, "--resume", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "started with other settings (epochs)" in lines[0], lines
    assert sorted(p.name for p in work.iterdir()) == ["config.json"]
