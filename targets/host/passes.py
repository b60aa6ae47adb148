"""Graph passes and graph rule sets: one registry of each (host side).

A target profile names what its export applies (``[export] passes``) and checks
(``[export] graph_rules``); the profile loader (profiles.py) accepts exactly the names of
these two dicts and the export looks the handlers up here, so a new pass or rule set is
one entry, with no name repeated elsewhere. In the spirit of Brevitas' export managers: a
target is data (its profile) plus handlers registered by name.

A pass takes a member graph and a label for messages and returns the new graph and a
JSON report for the manifest; a rule set raises a one-line ExportError naming the first
node that breaks it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgempir.targets.host import tensorrt_qdq as QDQ
from edgempir.targets.host import tensorrt_rules as TRT
from edgempir.targets.host.onnx_export import ExportError

GraphPass = Callable[[Any, str], "tuple[Any, dict]"]
RuleSet = Callable[[Any, str], None]


def _tensorrt_qdq(proto, what: str) -> tuple[Any, dict]:
    # the measurement that keeps this pass: how many TensorRT rules the raw graph breaks
    before = TRT.check_rules(proto)
    proto, rep = QDQ.tensorrt_qdq_pass(proto, what)
    return proto, {**rep.to_json(), "rule_violations_before": len(before),
                   "rule_violations_after": len(TRT.check_rules(proto))}


PASSES: dict[str, GraphPass] = {QDQ.PASS: _tensorrt_qdq}
RULES: dict[str, RuleSet] = {TRT.RULES: TRT.enforce_rules}


def apply_passes(proto, names: list[str], what: str) -> tuple[Any, list[dict]]:
    """Apply the named passes in order; returns the graph and one report per pass."""
    reports = []
    for name in names:
        proto, report = _registered(PASSES, name, "graph pass")(proto, what)
        reports.append(report)
    return proto, reports


def check_graph_rules(proto, names: list[str], what: str) -> None:
    for name in names:
        _registered(RULES, name, "graph rule set")(proto, what)


def _registered(registry: dict, name: str, what: str):
    if name not in registry:  # profiles.py admits registered names only
        raise ExportError(f"unknown {what} {name!r}")
    return registry[name]
