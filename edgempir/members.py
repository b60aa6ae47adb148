"""Member specs: the grammar of ``w2a4`` / ``fp32``, ``--bits 2,4,32`` and presets.

A member is one CNN of the ensemble, described by its weight and activation bit widths.
Torch-free: the CLI parses specs before any model is built.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgempir.errors import SpecError

MIN_BITS = 1
MAX_BITS = 16  # beyond 16 bits a "quantized" member is a float member in disguise
FLOAT_BITS = 32

_SPEC_RE = re.compile(r"^w(\d+)a(\d+)$")

# The paper's members per data set (EMPIR-REFERENCE.md, "Members"). Both presets use these
# bit widths; they differ in the quantizers (PRESET_QUANTIZER) and the training recipe.
_PAPER_BITS = {
    "mnist": ("w2a4", "w2a4", "fp32"),
    "fashion-mnist": ("w2a4", "w2a4", "fp32"),
    "cifar10": ("w4a2", "w2a2", "fp32"),
    "synthetic": ("w2a4", "w2a4", "fp32"),
}
# image folders (natural RGB images): CIFAR-10's members under the edge preset; preset
# paper builds the paper's ImageNet members (AlexNet with BatchNorm: w2a2, w4a4, fp32)
_EDGE_BITS = {**_PAPER_BITS, "folder": _PAPER_BITS["cifar10"]}
PRESETS = {"edge": _EDGE_BITS,
           "paper": {**_PAPER_BITS, "folder": ("w2a2", "w4a4", "fp32")}}
DEFAULT_PRESET = "edge"

#: preset -> quantizer family (edgempir.models.QUANTIZERS): ``paper`` is the reference code's
#: DoReFa members; ``edge`` (8-bit input, learned per-channel scales) is our deliberate
#: departure for accuracy and deployability (README, "Presets").
PRESET_QUANTIZER = {"edge": "edge", "paper": "dorefa"}

#: preset -> data set -> training recipe; the CLI fills in what the user did not give.
#: paper: the reference's examples/mnist_attack.py and cifar10_attack.py (Adam, constant lr
#: 1e-3, batch 128, no augmentation; CIFAR-10 6 epochs with label smoothing 0.1). Both
#: presets train with Adam, lr 1e-3 and batch 128 (the CLI's defaults).
_PAPER_RECIPE = {"epochs": 15, "schedule": "constant", "label_smoothing": 0.0,
                 "augment": "none"}
PRESET_RECIPES = {
    "paper": {"mnist": _PAPER_RECIPE, "fashion-mnist": _PAPER_RECIPE,
              "synthetic": _PAPER_RECIPE,
              "cifar10": {**_PAPER_RECIPE, "epochs": 6, "label_smoothing": 0.1},
              # image folders: CIFAR-10's recipe (the paper's ImageNet members came from
              # DoReFa-Net's long schedule, not reproduced here: pass --epochs)
              "folder": {**_PAPER_RECIPE, "epochs": 6, "label_smoothing": 0.1}},
    # edge: 5 epochs, cosine schedule, the data set's default augmentation (data.py)
    "edge": {d: {"epochs": 5, "schedule": "cosine", "label_smoothing": 0.0}
             for d in _EDGE_BITS},
}


def preset_recipe(name: str, dataset: str) -> dict:
    preset(name, dataset)  # the same one-line errors for an unknown preset or data set
    return dict(PRESET_RECIPES[name][dataset])


@dataclass(frozen=True)
class MemberSpec:
    """Bit widths of one member; ``None`` for both means full precision (fp32)."""

    weight_bits: int | None
    act_bits: int | None

    @property
    def is_float(self) -> bool:
        return self.weight_bits is None

    @property
    def name(self) -> str:
        return "fp32" if self.is_float else f"w{self.weight_bits}a{self.act_bits}"

    @property
    def rank(self) -> tuple[int, int]:
        """Precision order: fp32 is highest; used to pick the vote's tie-breaker."""
        if self.is_float:
            return (FLOAT_BITS, FLOAT_BITS)
        return (self.weight_bits or 0, self.act_bits or 0)  # both set when not float

    def to_json(self) -> dict:
        return {"spec": self.name, "weight_bits": self.weight_bits or FLOAT_BITS,
                "act_bits": self.act_bits or FLOAT_BITS}

    def __str__(self) -> str:
        return self.name


FP32 = MemberSpec(None, None)


def _check_bits(value: int, what: str, text: str) -> None:
    if not MIN_BITS <= value <= MAX_BITS:
        raise SpecError(
            f"member spec {text!r}: {what} bit width {value} is out of range; use "
            f"{MIN_BITS}..{MAX_BITS} bits, or 'fp32' for a full-precision member")


def parse_spec(text: str) -> MemberSpec:
    """Parse ``w2a4``, ``fp32`` (or ``32``) into a :class:`MemberSpec`."""
    t = text.strip().lower()
    if t in ("fp32", "32", "float", "w32a32"):
        return FP32
    m = _SPEC_RE.match(t)
    if not m:
        raise SpecError(
            f"member spec {text!r} is not understood; write wKaL (e.g. w2a4: 2-bit "
            "weights, 4-bit activations) or fp32")
    w, a = int(m.group(1)), int(m.group(2))
    _check_bits(w, "weight", text)
    _check_bits(a, "activation", text)
    return MemberSpec(w, a)


def _check_count(specs: list[MemberSpec], source: str) -> list[MemberSpec]:
    if len(specs) < 2:
        raise SpecError(f"{source} gives {len(specs)} member(s); an ensemble needs at least 2")
    return specs


def parse_members(text: str) -> list[MemberSpec]:
    """``--members w2a4,w2a4,fp32``."""
    parts = [p for p in text.split(",") if p.strip()]
    return _check_count([parse_spec(p) for p in parts], f"--members {text!r}")


def parse_bits(text: str) -> list[MemberSpec]:
    """``--bits 2,4,32``: k means wk ak, 32 means fp32."""
    specs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit():
            raise SpecError(f"--bits {text!r}: {part!r} is not a whole number of bits; "
                            "write e.g. --bits 2,4,32")
        k = int(part)
        if k == FLOAT_BITS:
            specs.append(FP32)
            continue
        if not MIN_BITS <= k <= MAX_BITS:
            raise SpecError(f"--bits {text!r}: {k} bits is out of range; use "
                            f"{MIN_BITS}..{MAX_BITS}, or 32 for a full-precision member")
        specs.append(MemberSpec(k, k))
    return _check_count(specs, f"--bits {text!r}")


def preset(name: str, dataset: str) -> list[MemberSpec]:
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    table = PRESETS[name]
    if dataset not in table:
        raise SpecError(f"preset {name!r} has no members for data set {dataset!r}; "
                        f"known: {', '.join(sorted(table))}")
    return [parse_spec(s) for s in table[dataset]]


def resolve_members(dataset: str, members: str | None = None, bits: str | None = None,
                    preset_name: str | None = None) -> list[MemberSpec]:
    """Apply the CLI's rule: at most one of --members, --bits, --preset; default preset edge."""
    given = [n for n, v in (("--members", members), ("--bits", bits), ("--preset", preset_name))
             if v]
    if len(given) > 1:
        raise SpecError(f"{' and '.join(given)} both choose the members; give only one")
    if members:
        return parse_members(members)
    if bits:
        return parse_bits(bits)
    return preset(preset_name or DEFAULT_PRESET, dataset)


