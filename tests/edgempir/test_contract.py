"""The host/device contract: one module both sides read (edgempir/contract.py)."""
import pytest

from edgempir import contract
from edgempir.errors import SpecError
from edgempir.members import parse_members


def _table(specs: str) -> list[dict]:
    return [dict(index=i, **s.to_json()) for i, s in enumerate(parse_members(specs))]


def test_member_table_parses_into_typed_specs():
    specs = contract.check_member_table(_table("w2a4,w4a2,fp32"), reference=2)
    assert [s.name for s in specs] == ["w2a4", "w4a2", "fp32"]
    assert specs[0].weight_bits == 2 and specs[0].act_bits == 4 and specs[2].is_float


@pytest.mark.parametrize("change, message", [
    ({"weight_bits": 4}, "weight_bits/act_bits 4/4"),
    ({"act_bits": 2}, "weight_bits/act_bits 2/2"),
    ({"spec": "w2a9x"}, "not understood"),
])
def test_member_table_that_contradicts_itself_is_refused(change, message):
    table = _table("w2a4,w2a4,fp32")
    table[0].update(change)
    with pytest.raises(SpecError, match=message):
        contract.check_member_table(table, reference=2)


def test_reference_member_must_be_the_one_the_vote_rule_picks():
    with pytest.raises(SpecError, match="picks member 2"):
        contract.check_member_table(_table("w2a4,w2a4,fp32"), reference=0)
    assert contract.reference_index(parse_members("w2a4,w8a8,w4a4")) == 1


def test_member_stem_is_shared_by_run_dir_and_bundle():
    from pathlib import Path

    from edgempir.members import parse_spec
    from edgempir.rundir import member_weights_path
    from edgempir.targets.device.bundle import member_relpath

    spec = parse_spec("w2a4")
    assert member_weights_path(Path("r"), 1, spec).name == "1-w2a4.safetensors"
    assert member_relpath(1, spec.name) == "members/1-w2a4.onnx"
    assert contract.member_stem(1, spec) == "1-w2a4"
