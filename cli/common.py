"""Options shared by several commands (torch-free)."""
from __future__ import annotations

import click

# numpy's generators refuse negative seeds and torch's refuse seeds of 2**64 and more
seed_option = click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0,
                           help="Random seed.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print only JSON on stdout (no table, no progress).")


# What the host commands import that a device install (`edgempir[device]`) lacks.
HOST_MODULES = ("torch", "brevitas", "onnx", "onnxscript", "onnxoptimizer", "safetensors", "tqdm",
                "matplotlib", "scipy")
HOST_INSTALL_HINT = "pip install 'edgempir[host]' (README, 'Set up and run')"


def require_host(command: str) -> None:
    """Refuse a host command, in one line, where only the device install is present."""
    import importlib.util

    from edgempir.errors import HostInstallError

    missing = [m for m in HOST_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise HostInstallError(
            f"'edgempir {command}' runs on the host and needs {', '.join(missing)}, which this "
            f"install lacks (a device install runs only bench and build); {HOST_INSTALL_HINT}")
