"""What the host and the device must agree on, in one place (torch-free, device-safe).

The exporter writes bundles with these names and rules and the device reads them back with
the same module: graph input and output names, member file stems, the reference-member
rule and the member spec grammar (:mod:`edgempir.members`, parsed into a typed
:class:`~edgempir.members.MemberSpec` on both sides).
"""
from __future__ import annotations

from edgempir.errors import SpecError
from edgempir.members import FLOAT_BITS, MemberSpec, parse_spec

# graph and data-set names: every ONNX graph's input, every calibration/evaluation set's keys
INPUT_NAME = "input"
LABEL_NAME = "label"
# the ensemble graph's outputs, in order, and each member graph's one output
CLASS_IDS = "class_ids"
MEMBER_LOGITS = "member_logits"
ACCEPTED = "accepted"      # the reject policy's verdict per row (docs/BUNDLE.md)
# bool [members, batch]: True where the member ran on that row; an early-exit graph skips
# members whose vote cannot change the decision and leaves NaN in their member_logits rows
MEMBER_RAN = "member_ran"
# how the ensemble graph executes the vote (export option [export] vote of a profile)
VOTE_FULL = "full"
VOTE_EARLY_EXIT = "early-exit"
VOTE_MODES = (VOTE_EARLY_EXIT, VOTE_FULL)
MEMBER_OUTPUT = "logits"


def member_stem(index: int, spec: MemberSpec | str) -> str:
    """The file stem of member ``index``: ``0-w2a4``, ``2-fp32`` (run dir and bundle alike)."""
    return f"{index}-{spec}"


def reference_index(specs: list[MemberSpec]) -> int:
    """The member whose vote breaks ties: the first of highest precision (fp32 if any)."""
    best = max(spec.rank for spec in specs)
    return next(i for i, s in enumerate(specs) if s.rank == best)


def cascade_order(specs: list[MemberSpec]) -> list[int]:
    """The order an early-exit vote runs members in: cheapest (lowest precision) first and
    the reference member last, so that it runs only where no majority has formed."""
    ref = reference_index(specs)
    return sorted(range(len(specs)), key=lambda i: (specs[i].rank, i == ref, i))


def check_member_table(members: list[dict], reference: int) -> list[MemberSpec]:
    """A manifest's member table as typed specs; raises SpecError when it contradicts itself.

    Each entry's ``spec`` string must parse, its ``weight_bits``/``act_bits`` must be the
    spec's (32 for fp32), and ``reference`` must be the member the vote rule picks.
    """
    specs = []
    for i, m in enumerate(members):
        spec = parse_spec(str(m.get("spec")))
        want = (spec.weight_bits or FLOAT_BITS, spec.act_bits or FLOAT_BITS)
        got = (m.get("weight_bits"), m.get("act_bits"))
        if got != want or not all(type(v) is int for v in got):  # "2" or true is no bit width
            raise SpecError(f"members[{i}] is {spec} but says weight_bits/act_bits "
                            f"{got[0]!r}/{got[1]!r} (a {spec} member has {want[0]}/{want[1]})")
        specs.append(spec)
    if specs and reference != reference_index(specs):
        raise SpecError(f"reference_member is {reference}, but the vote rule picks member "
                        f"{reference_index(specs)} (the first of highest precision)")
    return specs
