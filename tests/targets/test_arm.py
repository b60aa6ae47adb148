"""The ``arm`` target on ARM code: a bundle's device side on aarch64 under qemu-user.

scripts/arm-sysroot.sh builds (once, cached) an aarch64 Debian Python with PyPI's aarch64
numpy and onnxruntime; scripts/edgempir-arm runs edgempir's device side in it. The bundle
is exported on this (x86) host, as a user would, then:

- ``edgempir bench`` runs end to end under emulation and says so in its report;
- the ensemble's class ids on ARM equal the x86 ones exactly, member logits within a
  tolerance (the same device-side code, ``DEVICE_PROBE``, runs natively and emulated);
- the low-bit members run as integer kernels in ONNX Runtime's optimised graph on ARM
  (written under emulation, parsed here with the onnx package the sysroot does not have).

Skipped with the reason where the sysroot cannot be built (no apt/dpkg, no qemu, no
network); EDGEMPIR_REQUIRE_ARM=1 (CI) turns that skip into a failure.
EDGEMPIR_ARM_BUNDLE=DIR runs them on an existing arm bundle instead. See docs/ARM.md.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.arm

REPO = Path(__file__).resolve().parents[2]
SYSROOT_SCRIPT = REPO / "scripts" / "arm-sysroot.sh"
RUNNER = REPO / "scripts" / "edgempir-arm"
FORBIDDEN = ("torch", "brevitas", "onnx", "onnxscript", "torchattacks")

# ONNX Runtime's names for integer convolution / matmul kernels (standard and contrib ops,
# e.g. the NHWC com.microsoft.QLinearConv its layout pass makes on ARM) and for float ones.
INTEGER_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm",
               "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "NhwcQLinearConv"}
FLOAT_CONV_OPS = {"Conv", "FusedConv", "NchwcConv", "NhwcFusedConv"}
# EDGEMPIR_ARM_CPU picks the emulated core (the runner's default: cortex-a76)
ARM_CPU = os.environ.get("EDGEMPIR_ARM_CPU", "cortex-a76")
CORE_NAMES = {"cortex-a53": "Cortex-A53", "cortex-a57": "Cortex-A57", "cortex-a72": "Cortex-A72",
              "cortex-a76": "Cortex-A76", "neoverse-n1": "Neoverse-N1"}


def _run(cmd, timeout=900, env=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def _check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        raise AssertionError(f"{what} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def host_cli(*args: str) -> subprocess.CompletedProcess:
    return _check(_run([sys.executable, "-m", "edgempir.cli", *args]), f"edgempir {args[0]}")


def arm(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """scripts/edgempir-arm ARGS: edgempir (or with --python, python) on emulated aarch64."""
    return _check(_run(["bash", RUNNER, *args], timeout=timeout),
                  f"scripts/edgempir-arm {' '.join(args[:2])}")


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def arm_sysroot() -> Path:
    """The sysroot, built here if needed (about 35 s and 80 MB of downloads, then cached)."""
    if sys.platform != "linux":
        pytest.skip("the ARM emulation tests need Linux (qemu-user)")
    proc = _run(["bash", SYSROOT_SCRIPT])
    if proc.returncode == 0:
        return Path(proc.stdout.strip().splitlines()[-1])
    reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode in (2, 3) and not os.environ.get("EDGEMPIR_REQUIRE_ARM"):
        pytest.skip(f"no ARM sysroot here: {reason}")
    raise AssertionError(f"scripts/arm-sysroot.sh exited {proc.returncode}: {reason}\n"
                         f"{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def arm_bundle(request, tmp_path_factory) -> Path:
    """The synthetic run, evaluated (quick), exported with --target arm on the host; or the
    arm bundle EDGEMPIR_ARM_BUNDLE names (to check a real one, e.g. exported from runs/)."""
    from edgempir.cli import main

    if os.environ.get("EDGEMPIR_ARM_BUNDLE"):
        return Path(os.environ["EDGEMPIR_ARM_BUNDLE"]).resolve()
    missing = [c for c in ("eval", "export") if c not in main.commands]
    if missing:
        pytest.skip(f"edgempir {' and '.join(missing)} not available yet")
    work = tmp_path_factory.mktemp("arm")
    try:  # eval is the expensive step: share the session's evaluated run where there is one
        run = request.getfixturevalue("evaluated_run")
    except pytest.FixtureLookupError:
        run = work / "run"
        shutil.copytree(request.getfixturevalue("synthetic_run"), run)  # eval writes into it
        host_cli("eval", str(run), "--config", "quick", "--n", "48")
    out = work / "synthetic-arm"
    host_cli("export", str(run), "--target", "arm", "--out", str(out))
    return out


# The same device-side code runs natively (x86 reference) and under emulation: the deployed
# ensemble graph on the bundle's evaluation sets (class ids and every member's logits), and
# ONNX Runtime's optimised graph of the ensemble and of each member.
DEVICE_PROBE = r"""
import json, platform, sys
import numpy as np
import onnxruntime
from edgempir.calib import INPUT_NAME, read_set
from edgempir.targets.device.bundle import verify_bundle
from edgempir.targets.device.onnxruntime import write_optimized_graph
from edgempir.targets.device.runtime import open_model

bundle, out = verify_bundle(sys.argv[1]), sys.argv[2]
ort_profile = bundle.profile.get("onnxruntime")
ensemble = open_model(bundle, "ensemble", threads=1)
arrays, sets = {}, [s for s in ("clean", "adv-adaptive") if s in bundle.manifest["calib"]]
for name in sets:
    x = read_set(bundle.calib_file(name), bundle.input_shape, bundle.num_classes)[INPUT_NAME]
    arrays[name + "__class_ids"], arrays[name + "__member_logits"] = ensemble.run(x)
for i in range(len(bundle.members)):
    write_optimized_graph(bundle.member_file(i), f"{out}/member{i}-optimized.onnx", ort_profile)
write_optimized_graph(bundle.ensemble_file, f"{out}/ensemble-optimized.onnx", ort_profile)
np.savez(f"{out}/outputs.npz", **arrays)
print(json.dumps({"machine": platform.machine(), "onnxruntime": onnxruntime.__version__,
                  "sets": sets, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def _probe(cmd_prefix, bundle: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = _check(_run([*cmd_prefix, "-c", DEVICE_PROBE, bundle, out]), "device probe")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out / "outputs.npz", allow_pickle=False) as z:
        info["arrays"] = {k: z[k] for k in z.files}
    info["dir"] = out
    return info


@pytest.fixture(scope="session")
def probes(arm_sysroot, arm_bundle, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("arm-probe")
    return {"x86": _probe([sys.executable], arm_bundle, work / "x86"),
            "arm": _probe(["bash", RUNNER, "--python"], arm_bundle, work / "arm")}


def _op_counts(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _quantized_layers(path: Path) -> int:
    """Conv/Gemm/MatMul nodes of an exported graph whose weight comes out of a
    DequantizeLinear: the layers that must become integer kernels."""
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    return sum(1 for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1
               and getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear")


# ----------------------------------------------------------------- tests
def test_runner_is_aarch64_with_only_the_device_side(arm_sysroot):
    """The guest is aarch64, sees the sysroot's packages and the project's sources only,
    imports the whole device path without torch/brevitas/onnx, and its child processes
    (bench's memory probe) are emulated the same way."""
    code = r"""
import json, os, platform, subprocess, sys
import edgempir, edgempir.cli, edgempir.cli.bench_cmd, edgempir.calib, edgempir.vote
import edgempir.targets.device.bench, edgempir.targets.device.bundle, edgempir.targets.device.runtime
import edgempir.targets.device.onnxruntime, edgempir.targets.device.square
import numpy, onnxruntime
child = subprocess.run([sys.executable, "-c", "import platform; print(platform.machine())"],
                       capture_output=True, text=True)
print(json.dumps({"machine": platform.machine(), "edgempir": edgempir.__file__,
                  "numpy": numpy.__file__, "onnxruntime": onnxruntime.__file__,
                  "path": sys.path, "child": child.stdout.strip(),
                  "emulated": os.environ.get("EDGEMPIR_EMULATED"),
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""
    info = json.loads(arm("--python", "-c", code).stdout.strip().splitlines()[-1])
    root = str(arm_sysroot)
    assert info["machine"] == "aarch64" and info["child"] == "aarch64"
    assert info["edgempir"].startswith(root + "/opt/edgempir/src/edgempir/")
    assert info["numpy"].startswith(root) and info["onnxruntime"].startswith(root)
    assert all(p.startswith(root) for p in info["path"]), info["path"]
    assert info["emulated"] and info["emulated"].startswith("qemu-aarch64")
    imported = [m for m in FORBIDDEN if m in info["modules"]]
    assert not imported, f"the device path imports {imported}"


def test_runner_errors_are_one_line(tmp_path):
    env = {"EDGEMPIR_ARM_SYSROOT": str(tmp_path / "none")}
    proc = _run(["bash", RUNNER, "--version"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "scripts/arm-sysroot.sh" in proc.stderr
    assert _run(["bash", SYSROOT_SCRIPT, "--check"], env=env).returncode == 1


def test_bench_end_to_end_under_emulation(arm_sysroot, arm_bundle, tmp_path):
    """`edgempir bench` on ARM: verifies, times, measures memory in child processes (emulated
    too), evaluates, attacks, and says that it ran emulated and on which CPU. Small settings:
    emulated float math is slow (docs/ARM.md)."""
    from edgempir.targets.device.bench import format_report, validate_report

    small = ["--batch-sizes", "1", "--warmup", "1", "--repeats", "5", "--time-cap", "0.2",
             "--threads", "1", "--n", "16", "--square-n", "2", "--square-queries", "5"]
    out = tmp_path / "arm-bench.json"
    report = json.loads(arm("bench", str(arm_bundle), "--json", *small, "--out", str(out)).stdout)
    assert json.loads(out.read_text()) == report
    assert validate_report(report) == []
    m = report["machine"]
    assert m["arch"] == "aarch64"
    assert m["cpu_model"] == CORE_NAMES[ARM_CPU]
    assert m["emulation"]["emulated"] is True
    assert m["emulation"]["emulator"] == f"qemu-aarch64-static -cpu {ARM_CPU}"
    assert "emulated" in [w["code"] for w in report["warnings"]]
    assert "EMULATED" in format_report(report)
    assert report["runtime"]["versions"]["onnxruntime"]
    assert report["memory"]["ensemble"]["peak_rss_bytes"] > 0  # a child process, emulated
    assert report["memory"]["fp32_member"]["peak_rss_bytes"] > 0
    assert report["square"]["ensemble"]["n"] == 2

    x86 = json.loads(host_cli("bench", str(arm_bundle), "--json", *small, "--no-memory",
                              "--out", str(tmp_path / "x86-bench.json")).stdout)
    assert x86["machine"]["emulation"]["emulated"] is False
    assert [s["name"] for s in report["accuracy"]["sets"]] == \
        [s["name"] for s in x86["accuracy"]["sets"]]
    for got, ref in zip(report["accuracy"]["sets"], x86["accuracy"]["sets"]):
        assert got["deployed_accuracy"] == ref["deployed_accuracy"], got["name"]
        assert got["member_accuracy"] == ref["member_accuracy"], got["name"]


def test_ensemble_on_arm_matches_x86(probes):
    x86, armv8 = probes["x86"], probes["arm"]
    assert armv8["machine"] == "aarch64" and x86["machine"] != "aarch64"
    assert not [m for m in FORBIDDEN if m in armv8["modules"]]
    assert armv8["sets"] == x86["sets"] and "clean" in x86["sets"]
    a, b = x86["arrays"], armv8["arrays"]
    assert sorted(a) == sorted(b)
    for name in x86["sets"]:
        np.testing.assert_array_equal(b[f"{name}__class_ids"], a[f"{name}__class_ids"],
                                      err_msg=f"{name}: class ids on ARM differ from x86")
        ref, got = a[f"{name}__member_logits"], b[f"{name}__member_logits"]  # [M, N, C]
        # an early-exit graph leaves NaN rows where a member did not run: the same rows on
        # both machines, and the logits it did compute within 1e-4
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref),
                                      err_msg=f"{name}: members ran on other rows on ARM")
        for i in range(ref.shape[0]):
            if np.isnan(ref[i]).all():
                continue
            scale = max(1.0, float(np.nanmax(np.abs(ref[i]))))
            diff = float(np.nanmax(np.abs(got[i] - ref[i])))
            assert diff <= 1e-4 * scale, (f"{name}, member {i}: logits on ARM differ from x86 "
                                          f"by {diff:.3g} (largest logit {scale:.3g})")


def test_low_bit_members_run_integer_kernels_on_arm(probes, arm_bundle):
    from edgempir.targets.device.bundle import verify_bundle

    bundle = verify_bundle(arm_bundle)
    arm_dir, x86_dir = probes["arm"]["dir"], probes["x86"]["dir"]
    total_quantized = float_convs_fp32 = 0
    for m in bundle.members:
        i = m["index"]
        counts = _op_counts(arm_dir / f"member{i}-optimized.onnx")
        n_int = sum(counts[op] for op in INTEGER_OPS)
        n_float_conv = sum(counts[op] for op in FLOAT_CONV_OPS)
        if m["weight_bits"] < 32:
            quantized = _quantized_layers(bundle.member_file(i))
            assert quantized > 0, f"member {i} ({m['spec']}) has no quantized layers to check"
            assert n_float_conv == 0, f"member {i} ({m['spec']}) runs float convs on ARM: {counts}"
            assert n_int >= quantized, (f"member {i} ({m['spec']}): {n_int} integer kernels for "
                                        f"{quantized} quantized layers on ARM: {dict(counts)}")
            x86_counts = _op_counts(x86_dir / f"member{i}-optimized.onnx")
            assert n_int == sum(x86_counts[op] for op in INTEGER_OPS), (counts, x86_counts)
            total_quantized += quantized
        else:  # the counting can tell the difference: fp32 runs float convolutions
            assert n_int == 0 and n_float_conv > 0, f"fp32 member on ARM: {dict(counts)}"
            float_convs_fp32 += n_float_conv
    ens = _op_counts(arm_dir / "ensemble-optimized.onnx")
    assert sum(ens[op] for op in INTEGER_OPS) >= total_quantized, dict(ens)
    assert sum(ens[op] for op in FLOAT_CONV_OPS) == float_convs_fp32, dict(ens)
