"""Presets in the run manifest: the quantizer family is recorded, and runs written before it
was (no ``quantizer`` key, whatever preset name they carry) load as edge members."""
from __future__ import annotations

import json
import shutil

import pytest
import testkit as H


def _family_of(ens) -> set[str]:
    return {type(m).__module__.rsplit(".", 1)[-1] for m in ens.members}


@pytest.fixture
def run_copy(synthetic_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(synthetic_run, dst, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    return dst


def test_new_runs_record_preset_and_family(synthetic_run):
    m = json.loads((synthetic_run / "manifest.json").read_text())
    assert m["preset"] == "edge" and m["quantizer"] == "edge"


@pytest.mark.parametrize("legacy", [
    lambda m: (m.pop("quantizer"), m.pop("preset")),          # before the family existed
    lambda m: (m.pop("quantizer"), m.update(preset="paper")),  # 'paper' named edge members
])
def test_runs_without_a_family_load_as_edge_members(run_copy, legacy):
    from edgempir.rundir import load_run

    H.edit_manifest(run_copy, legacy)
    ens = load_run(run_copy)
    assert _family_of(ens) == {"paper"}  # edgempir.models.paper: the edge networks
    assert ens.members[0].quant_input.act_quant.is_quant_enabled  # 8-bit input quantizer


def test_family_decides_the_networks_and_bad_values_are_one_line_errors(run_copy):
    from edgempir.errors import RunDirError
    from edgempir.rundir import load_run

    H.edit_manifest(run_copy, lambda m: m.update(quantizer="dorefa"))
    with pytest.raises(RunDirError, match="do not fit"):  # edge weights, DoReFa networks
        load_run(run_copy)
    H.edit_manifest(run_copy, lambda m: m.update(quantizer="int3"))
    with pytest.raises(RunDirError, match="quantizer must be one of edge, dorefa"):
        load_run(run_copy)


def test_cli_preset_paper_trains_dorefa_members_with_the_reference_recipe(cli, tmp_path):
    from edgempir.rundir import load_run

    out = tmp_path / "paper"
    cli("train", "--dataset", "synthetic", "--preset", "paper", "--epochs", "1",
        "--out", str(out))
    m = json.loads((out / "manifest.json").read_text())
    assert m["preset"] == "paper" and m["quantizer"] == "dorefa"
    assert m["training"]["schedule"] == "constant" and m["training"]["augment"] == "none"
    assert m["training"]["label_smoothing"] == 0.0
    assert _family_of(load_run(out)) == {"reference"}
