"""``edgempir build BUNDLE``: build a jetson bundle's TensorRT engines on the device itself.

Device side (Python 3.10, numpy + TensorRT): no torch, no onnx package. Engines and the
timing cache go to a cache outside the bundle (``EDGEMPIR_ENGINE_CACHE`` or
~/.cache/edgempir/engines/<manifest sha256[:16]>/) and are reused while TensorRT version,
GPU and ONNX file match; ``bench`` builds them on first use too, so this command only
moves the wait.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgempir.cli.common import json_option


@click.command("build", epilog="""\b
Example (on the Jetson):
  edgempir build bundles/fm-jetson
""")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Rebuild engines even if cached ones match.")
@json_option
def command(bundle, force, as_json):
    """Build (or reuse) the TensorRT engines of a jetson bundle, on this device."""
    from edgempir.errors import BundleError
    from edgempir.targets.device import tensorrt
    from edgempir.targets.device.bundle import verify_bundle
    from edgempir.targets.device.runtime import runtime_of

    b = verify_bundle(bundle)
    if not runtime_of(b).builds_engines:
        raise BundleError(f"bundle {bundle} targets {b.target} ({b.runtime}); only TensorRT "
                          "bundles have engines to build: run 'edgempir bench' directly")
    tensorrt.require_tensorrt(b)
    echo = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    plans = tensorrt.build_all(b, force=force, echo=echo)
    result = {"bundle": str(bundle), "engines": [str(p) for p in plans]}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for p in result["engines"]:
            click.echo(p)
