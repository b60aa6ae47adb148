"""The bundle manifest's field checks one by one (targets/device/manifest_checks.py), each
at its boundary: types (a bool is not a count), the vote's execution order, the host's
rejection rates, the profile's runtime, paths that resolve outside the bundle, and the
one-line messages cut short. Written for the survivors of the mutation run of 2026-12-01
(docs/TESTING.md); the hostile bundles of tests/reliability/test_hostile.py go through
verify_bundle as a whole."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgempir.errors import BundleError
from edgempir.targets.device import manifest_checks as C

P = Path("/bundles/b")


def _refused(fn, needle: str) -> None:
    with pytest.raises(BundleError) as info:
        fn()
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_need_takes_a_bool_only_where_a_bool_belongs():
    assert C.need({"n": 3}, "n", int, "", P) == 3
    assert C.need({"flag": True}, "flag", bool, "", P) is True
    assert C.need({"flag": True}, "flag", (bool, int), "", P) is True
    _refused(lambda: C.need({"n": True}, "n", int, "x.", P), "x.'n' has the wrong type")
    _refused(lambda: C.need({"n": True}, "n", (int, float), "", P), "wrong type")
    _refused(lambda: C.need({}, "n", int, "x.", P), "manifest lacks x.'n'")
    _refused(lambda: C.need(["n"], "n", int, "", P), "manifest lacks 'n'")


@pytest.mark.parametrize("order", [
    [0, 1, 2], [1, 2, 0],                # the reference (1) not last
    [0, 0, 1], [2, 3, 1], [0, 1],        # last is right, the rest is not every member once
    [0, 2, True],                        # True == 1, but a bool is not a member index
    "0,1,2", None])
def test_a_vote_order_must_list_every_member_once_with_the_reference_last(order):
    _refused(lambda: C.check_vote_execution(P, {"mode": "early-exit", "order": order}, 3, 1),
             "vote_execution.order")


def test_a_valid_vote_execution_passes():
    C.check_vote_execution(P, None, 3, 2)
    C.check_vote_execution(P, {"mode": "early-exit", "order": [0, 2, 1]}, 3, 1)
    C.check_vote_execution(P, {"mode": "full", "order": [1, 2, 0]}, 3, 0)


@pytest.mark.parametrize("rate", [-0.01, 1.01, True, "0.5", float("inf")])
def test_a_host_rejection_rate_is_a_fraction(rate):
    manifest = {"reject_policy": {"name": "unanimous"}, "host_rejection": {"clean": 0.0,
                                                                          "adv": rate}}
    _refused(lambda: C.reject_fields(P, manifest), "host_rejection.adv")


def test_rejection_rates_at_the_ends_pass():
    manifest = {"reject_policy": {"name": "unanimous"},
                "host_rejection": {"clean": 0, "adv": 1.0, "mid": 0.5}}
    assert C.reject_fields(P, manifest) == ("unanimous", {"clean": 0, "adv": 1.0, "mid": 0.5})
    assert C.reject_fields(P, {}) == (None, {})


@pytest.mark.parametrize("other", ["onnxruntime", "tensorrt"])
def test_the_profile_runtime_must_be_the_bundles(other):
    runtime = "tensorrt" if other == "onnxruntime" else "onnxruntime"
    _refused(lambda: C.check_profile(P, {"runtime": other}, runtime), "differs from runtime")
    C.check_profile(P, {"runtime": runtime}, runtime)


def test_short_cuts_at_the_limit_and_only_past_it():
    assert C.short("a" * 58) == repr("a" * 58)                       # 60 characters
    assert C.short("a" * 59) == repr("a" * 59)[:60] + "..."          # 61
    assert C.short("x", limit=3) == "'x'"


def test_an_unknown_key_is_named_cut_to_60_characters():
    key = "k" * 70
    _refused(lambda: C.check_keys(P, {key: 1}, frozenset(), "top."),
             f"unknown key 'top.{'k' * 60}' (this")
    # several: the first in sorted order, whatever the manifest's order
    _refused(lambda: C.check_keys(P, {"zz": 1, "ok": 2, "aa": 3}, frozenset({"ok"}), ""),
             "unknown key 'aa'")


def test_a_path_inside_passes_and_a_symlink_out_is_refused(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "calib").mkdir(parents=True)
    (bundle / "calib" / "x.npz").write_bytes(b"x")
    assert C.safe_relpath(bundle, "calib/x.npz") == bundle / "calib" / "x.npz"
    (tmp_path / "outside.npz").write_bytes(b"x")
    (bundle / "calib" / "link.npz").symlink_to(tmp_path / "outside.npz")
    _refused(lambda: C.safe_relpath(bundle, "calib/link.npz"), "outside the bundle (symlink)")
    # a symlink loop cannot be resolved: one line, not the runtime's own error
    (bundle / "calib" / "loop1").symlink_to("loop2")
    (bundle / "calib" / "loop2").symlink_to("loop1")
    _refused(lambda: C.safe_relpath(bundle, "calib/loop1"), "cannot be resolved")
    # a bundle path given with a symlinked parent still holds its own files
    alias = tmp_path / "alias"
    alias.symlink_to(bundle)
    assert C.safe_relpath(alias, "calib/x.npz") == alias / "calib" / "x.npz"
