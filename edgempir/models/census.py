"""Which layers of a member are quantized: the one test that export's integer-kernel check,
its weight-bytes count and the experiment's compute accounting share (they used to guess it
from Brevitas' class names each in their own way)."""
from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def is_quantized_layer(module: nn.Module) -> bool:
    """A Brevitas conv/linear layer: its weights pass through a quantizer (Brevitas' layers
    subclass torch's, so the module of the class is what tells them apart)."""
    return (isinstance(module, WEIGHT_LAYERS)
            and type(module).__module__.startswith("brevitas"))
