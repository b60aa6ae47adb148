"""Where TensorRT engines are cached: outside the bundle, one folder per bundle.

No GPU needed: choosing the cache folder touches neither TensorRT nor CUDA.
"""
from __future__ import annotations

from edgempir.targets.device import tensorrt
from edgempir.targets.device.bundle import verify_bundle


def test_engines_never_live_inside_the_bundle(jetson_bundle, monkeypatch, tmp_path):
    # a plan shipped inside a bundle is native code nobody verified: it must not be loaded
    bundle = verify_bundle(jetson_bundle)
    monkeypatch.setattr(tensorrt.Path, "home", staticmethod(lambda: tmp_path))
    where = tensorrt.engine_cache_dir(bundle, env={})
    assert where.parent == tmp_path / ".cache" / "edgempir" / "engines"
    assert jetson_bundle not in where.parents
    # keyed by the manifest's hash: another bundle never reuses these engines
    assert where.name == tensorrt.sha256_file(jetson_bundle / "manifest.json")[:16]


def test_cache_variable_wins(jetson_bundle, tmp_path):
    bundle = verify_bundle(jetson_bundle)
    where = tensorrt.engine_cache_dir(bundle, env={tensorrt.ENGINE_CACHE_ENV: str(tmp_path)})
    assert where.parent == tmp_path
