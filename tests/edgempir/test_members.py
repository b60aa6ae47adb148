import pytest

from edgempir.contract import reference_index
from edgempir.errors import SpecError
from edgempir.members import (
    FP32,
    MemberSpec,
    parse_bits,
    parse_members,
    parse_spec,
    preset,
    resolve_members,
)


@pytest.mark.parametrize("text, expected", [
    ("w2a4", MemberSpec(2, 4)), ("W4A2", MemberSpec(4, 2)), ("fp32", FP32), ("32", FP32),
    ("w16a1", MemberSpec(16, 1)),
])
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


def test_spec_names_round_trip():
    for s in ("w2a4", "w8a8", "fp32"):
        assert parse_spec(s).name == s


@pytest.mark.parametrize("text", ["abc", "w0a4", "w2a0", "w33a4", "w2a33", "w2", "a4", "", "w-1a2"])
def test_bad_specs_are_usage_errors(text):
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    assert "\n" not in str(e.value)


def test_bits_shorthand():
    assert parse_bits("2,4,32") == [MemberSpec(2, 2), MemberSpec(4, 4), FP32]


@pytest.mark.parametrize("text", ["0,32", "33,32", "2", "x,32", "2,,"])
def test_bad_bits(text):
    with pytest.raises(SpecError):
        parse_bits(text)


def test_fewer_than_two_members_rejected():
    with pytest.raises(SpecError, match="at least 2"):
        parse_members("fp32")


def test_presets_follow_the_paper():
    assert [s.name for s in preset("paper", "fashion-mnist")] == ["w2a4", "w2a4", "fp32"]
    assert [s.name for s in preset("paper", "mnist")] == ["w2a4", "w2a4", "fp32"]
    assert [s.name for s in preset("paper", "cifar10")] == ["w4a2", "w2a2", "fp32"]
    # edge: the same bit widths, other quantizers and recipe
    assert [s.name for s in preset("edge", "cifar10")] == ["w4a2", "w2a2", "fp32"]


def test_presets_choose_quantizers_and_recipe():
    from edgempir.members import DEFAULT_PRESET, PRESET_QUANTIZER, preset_recipe

    assert DEFAULT_PRESET == "edge"  # the main job's members (README, "Presets")
    assert PRESET_QUANTIZER == {"edge": "edge", "paper": "dorefa"}
    assert preset_recipe("paper", "mnist") == {"epochs": 15, "schedule": "constant",
                                               "label_smoothing": 0.0, "augment": "none"}
    assert preset_recipe("paper", "cifar10")["epochs"] == 6
    assert preset_recipe("paper", "cifar10")["label_smoothing"] == 0.1
    assert preset_recipe("edge", "fashion-mnist") == {"epochs": 5, "schedule": "cosine",
                                                      "label_smoothing": 0.0}
    with pytest.raises(SpecError, match="unknown preset"):
        preset_recipe("papers", "mnist")


def test_only_one_member_source():
    with pytest.raises(SpecError, match="give only one"):
        resolve_members("mnist", members="w2a4,fp32", bits="2,32")
    assert [s.name for s in resolve_members("mnist")] == ["w2a4", "w2a4", "fp32"]


def test_reference_member_is_fp32_else_highest_precision():
    assert reference_index(parse_members("w2a4,fp32,w4a4")) == 1
    assert reference_index(parse_members("w2a4,w8a8,w4a4")) == 1
