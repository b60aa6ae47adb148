"""Architectures built from Brevitas layers, one registry.

``build_model(arch, spec, input_shape, num_classes, quantizer)`` builds a member; the same
class gives the fp32 member (plain torch layers) and the quantized ones (Brevitas layers).

Two quantizer families (the run manifest's ``quantizer``; docs/FORMATS.md):

- ``edge`` (preset ``edge``, the default): 8-bit input quantizer, learned per-channel weight
  scales, learned activation scales (``models/quant.py``; ``models/paper.py``).
- ``dorefa`` (preset ``paper``): the EMPIR reference code's DoReFa quantizers and networks
  (``models/dorefa.py``; ``models/reference.py``; AlexNet: ``models/alexnet.py``).

``alexnet`` and ``resnet18`` carry BatchNorm, which export folds into the integer
convolutions' rescale (targets/host/conv_integer.py); both take a width multiplier in the
architecture name (``resnet18:0.125``), recorded as given in the run manifest.
"""
from __future__ import annotations

from edgempir.errors import SpecError

# name -> (module path, class name, what it is for); imported lazily so that listing the
# architectures (CLI help) does not import torch.
ARCHS = {
    "mnist": ("edgempir.models.paper", "MnistNet", "paper's MNIST net (28x28, 1 channel)"),
    "cifar": ("edgempir.models.paper", "CifarNet", "paper's CIFAR-10 net (32x32, 3 channels)"),
    "resnet8": ("edgempir.models.resnet", "ResNet8", "ResNet-8 without BatchNorm (CIFAR-10)"),
    "alexnet": ("edgempir.models.alexnet", "AlexNet",
                "AlexNet with BatchNorm (the paper's ImageNet net; images >= 63 px)"),
    "resnet18": ("edgempir.models.resnet18", "ResNet18",
                 "torchvision's ResNet-18 with BatchNorm (images >= 33 px)"),
}
#: architectures that take a width multiplier, written ``NAME:WIDTH`` (``alexnet:0.25``)
WIDTH_ARCHS = ("alexnet", "resnet18")
MAX_WIDTH = 4.0

# the same architecture names under the reference's DoReFa quantizers (preset paper)
DOREFA_ARCHS = {
    "mnist": ("edgempir.models.reference", "ReferenceMnistNet"),
    "cifar": ("edgempir.models.reference", "ReferenceCifarNet"),
    "alexnet": ("edgempir.models.alexnet", "DoReFaAlexNet"),
}
QUANTIZERS = ("edge", "dorefa")
#: runs written before the family was recorded used today's edge quantizers
LEGACY_QUANTIZER = "edge"

DEFAULT_ARCH = {"mnist": "mnist", "fashion-mnist": "mnist", "synthetic": "mnist",
                "cifar10": "cifar", "folder": "cifar"}
#: preset paper on image folders: the paper's ImageNet network
PAPER_ARCH = {"folder": "alexnet"}


def default_arch(dataset: str, preset: str | None = None) -> str:
    if preset == "paper" and dataset in PAPER_ARCH:
        return PAPER_ARCH[dataset]
    return DEFAULT_ARCH.get(dataset, "mnist")


def parse_arch(arch: str) -> tuple[str, float | None]:
    """``resnet18`` -> ("resnet18", None); ``alexnet:0.25`` -> ("alexnet", 0.25)."""
    name, sep, width_text = arch.partition(":")
    if name not in ARCHS:
        raise SpecError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    if not sep:
        return name, None
    if name not in WIDTH_ARCHS:
        raise SpecError(f"architecture {name!r} takes no width multiplier; "
                        f"{', '.join(WIDTH_ARCHS)} do ({name}:0.25)")
    try:
        width = float(width_text)
    except ValueError:
        width = float("nan")
    if not 0 < width <= MAX_WIDTH:  # also refuses nan
        raise SpecError(f"--arch {arch!r}: the width multiplier must be a number in "
                        f"(0, {MAX_WIDTH:g}], e.g. {name}:0.25")
    return name, width


def build_model(arch: str, spec, input_shape, num_classes: int, quantizer: str = "edge"):
    import importlib

    arch, multiplier = parse_arch(arch)
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
    extra = {} if multiplier is None else {"width": multiplier}
    try:
        return model_cls(spec, in_channels=channels, num_classes=num_classes, image_size=height,
                         **extra)
    except ValueError as e:
        raise SpecError(f"architecture {arch!r}: {e}") from None
