"""edgempir: adversarially robust mixed-precision ensembles (EMPIR) for embedded accelerators.

Python API (torch is imported only when you call something that needs it)::

    import edgempir
    ens = edgempir.load_run("runs/fmnist")     # Ensemble nn.Module, eval mode
    ens.member_logits(x)                       # [members, batch, classes]
    ens(x).argmax(1)                           # the deployed decision (vote by default)
    ens.surrogate()                            # differentiable mean-softmax stand-in
"""
from edgempir._version import __version__

__all__ = ["Ensemble", "MemberSpec", "__version__", "load_run", "parse_spec"]


def __getattr__(name):  # lazy: keeps `import edgempir` torch-free
    if name == "load_run":
        from edgempir.rundir import load_run
        return load_run
    if name == "Ensemble":
        from edgempir.ensemble import Ensemble
        return Ensemble
    if name in ("MemberSpec", "parse_spec"):
        from edgempir import members
        return getattr(members, name)
    raise AttributeError(f"module 'edgempir' has no attribute {name!r}")
