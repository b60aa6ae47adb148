"""The two quantizer families as one interface, for networks built for both (AlexNet):
``family.conv(spec, ...)`` is models/quant.py's under preset edge and models/dorefa.py's
under preset paper; an fp32 spec gives plain torch layers in either."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgempir.models import dorefa as D
from edgempir.models import quant as Q


@dataclass(frozen=True)
class Family:
    name: str
    input_quant: Callable   # (spec) -> the image's quantizer
    conv: Callable          # (spec, cin, cout, k, stride, padding) -> conv without bias
    linear: Callable        # (spec, cin, cout) -> hidden fully connected layer, no bias
    act: Callable           # (spec) -> ReLU whose output is the next layer's quantized input
    requant: Callable       # (spec) -> quantizer for a float tensor (after pooling)


EDGE = Family("edge", Q.input_quant, Q.conv, Q.linear, Q.relu, Q.requant)
DOREFA = Family("dorefa", D.input_quant, D.conv, D.linear, D.relu_then_quant, D.requant)
FAMILIES = {f.name: f for f in (EDGE, DOREFA)}
