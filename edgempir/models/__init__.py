"""Architectures built from Brevitas layers, one registry.

``build_model(arch, spec, input_shape, num_classes, quantizer)`` builds a member; the same
class gives the fp32 member (plain torch layers) and the quantized ones (Brevitas layers).

Two quantizer families (the run manifest's ``quantizer``; docs/FORMATS.md):

- ``edge`` (preset ``edge``, the default): 8-bit input quantizer, learned per-channel weight
  scales, learned activation scales (``models/quant.py``; ``models/paper.py``).
- ``dorefa`` (preset ``paper``): the EMPIR reference code's DoReFa quantizers and networks
  (``models/dorefa.py``; ``models/reference.py``).
"""
from __future__ import annotations

from edgempir.errors import SpecError

# name -> (module path, class name, what it is for); imported lazily so that listing the
# architectures (CLI help) does not import torch.
ARCHS = {
    "mnist": ("edgempir.models.paper", "MnistNet", "paper's MNIST net (28x28, 1 channel)"),
    "cifar": ("edgempir.models.paper", "CifarNet", "paper's CIFAR-10 net (32x32, 3 channels)"),
    "resnet8": ("edgempir.models.resnet", "ResNet8", "ResNet-8 without BatchNorm (CIFAR-10)"),
}

# the same architecture names under the reference's DoReFa quantizers (preset paper)
DOREFA_ARCHS = {
    "mnist": ("edgempir.models.reference", "ReferenceMnistNet"),
    "cifar": ("edgempir.models.reference", "ReferenceCifarNet"),
}
QUANTIZERS = ("edge", "dorefa")
#: runs written before the family was recorded used today's edge quantizers
LEGACY_QUANTIZER = "edge"

DEFAULT_ARCH = {"mnist": "mnist", "fashion-mnist": "mnist", "synthetic": "mnist",
                "cifar10": "cifar", "folder": "cifar"}


def default_arch(dataset: str) -> str:
    return DEFAULT_ARCH.get(dataset, "mnist")


def build_model(arch: str, spec, input_shape, num_classes: int, quantizer: str = "edge"):
    import importlib

    if arch not in ARCHS:
        raise SpecError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    if quantizer not in QUANTIZERS:
        raise SpecError(f"unknown quantizer family {quantizer!r}; known: {', '.join(QUANTIZERS)}")
    if quantizer == "dorefa":
        if arch not in DOREFA_ARCHS:
            raise SpecError(f"architecture {arch!r} has no reference (DoReFa) version; preset "
                            f"paper builds {', '.join(DOREFA_ARCHS)}")
        module, cls = DOREFA_ARCHS[arch]
    else:
        module, cls, _ = ARCHS[arch]
    channels, height, width = input_shape
    if height != width:
        raise SpecError(f"architecture {arch!r} needs square images, got {height}x{width}")
    model_cls = getattr(importlib.import_module(module), cls)
    try:
        return model_cls(spec, in_channels=channels, num_classes=num_classes, image_size=height)
    except ValueError as e:
        raise SpecError(f"architecture {arch!r}: {e}") from None
