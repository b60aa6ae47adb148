"""Target profiles: built-ins load, user files load, and every mistake is a one-line error."""
from __future__ import annotations

import json

import pytest

from edgempir.targets.device.profile import ProfileError
from edgempir.targets.host.profiles import BUILTIN, load_profile

USER = """
name = "board"
runtime = "onnxruntime"
[export]
integer_kernels = ["QLinearConv"]
[onnxruntime]
intra_op_threads = 2
"""


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_load_and_are_json(name):
    p = load_profile(name)
    assert p["name"] == name
    assert json.loads(json.dumps(p)) == p  # copied into the manifest as JSON
    assert (p["runtime"] == "tensorrt") == (name == "jetson")
    if name == "jetson":
        assert p["export"]["passes"] == ["tensorrt-qdq"]
        assert p["export"]["graph_rules"] == ["tensorrt"]
        assert p["tensorrt"]["versions"] == [10, 11]
    else:
        assert "QLinearConv" in p["export"]["integer_kernels"]


def test_user_profile_gets_defaults(tmp_path):
    f = tmp_path / "board.toml"
    f.write_text(USER)
    p = load_profile(str(f))
    assert p["name"] == "board" and p["onnxruntime"]["intra_op_threads"] == 2
    assert p["export"]["opset"] == 13 and p["validation"]["min_agreement"] == 0.995
    assert p["source"] == str(f)
    assert p["export"]["vote"] == "full"   # a user's profile gets the full vote unless it asks


def test_builtin_profiles_choose_the_vote():
    assert load_profile("x86")["export"]["vote"] == "early-exit"
    assert load_profile("arm")["export"]["vote"] == "early-exit"
    assert load_profile("jetson")["export"]["vote"] == "full"


@pytest.mark.parametrize("text, needle", [
    (USER + "colour = 1\n", "unknown key 'colour'"),
    (USER.replace("intra_op_threads = 2", "intra_op_thread = 2"), "unknown key 'intra_op_thread' in [onnxruntime]"),
    (USER + "[gpu]\nx = 1\n", "unknown key 'gpu'"),
    (USER.replace("intra_op_threads = 2", "intra_op_threads = \"2\""), "onnxruntime.intra_op_threads"),
    (USER.replace('runtime = "onnxruntime"', 'runtime = "tflite"'), "runtime = 'tflite' is invalid"),
    (USER.replace('name = "board"', ""), "name is missing"),
    (USER + "[validation]\nmin_agreement = 0.9\n", "validation.min_agreement"),
    (USER.replace("[export]", "[export]\npasses = [\"fold-everything\"]"), "export.passes"),
    (USER.replace("[export]", "[export]\nvote = \"fastest\""), "export.vote = 'fastest' is invalid"),
    (USER + "[tensorrt]\nmax_batch = 8\n", "[tensorrt] is only for runtime = 'tensorrt'"),
    ("name = [", "not valid TOML"),
])
def test_bad_user_profiles_are_one_line_errors(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(str(f))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_target_and_missing_file():
    with pytest.raises(ProfileError, match="unknown target 'riscv'; use one of arm, jetson, x86"):
        load_profile("riscv")
    with pytest.raises(ProfileError, match="not found"):
        load_profile("/nonexistent/board.toml")
