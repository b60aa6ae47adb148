"""The device install as a user makes it: the built wheel, non-editable, in a fresh Python 3.10
venv with the `device` extra (the README's device install line), then verify and bench a real
bundle there. Also: the import contracts (import-linter) on the wheel's layout, the jetson
extra pulling no ONNX Runtime, and host commands refusing in one line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# what `pip install "edgempir[device]"` may bring: ours and ONNX Runtime's own needs
DEVICE_DISTRIBUTIONS = {"edgempir", "numpy", "click", "psutil", "onnxruntime", "pip",
                        "setuptools", "flatbuffers", "packaging", "protobuf", "sympy", "mpmath",
                        "coloredlogs", "humanfriendly"}
NEVER_ON_DEVICE = {"torch", "brevitas", "onnx", "onnxscript", "onnxoptimizer", "matplotlib",
                   "scipy", "safetensors", "tqdm", "torchattacks"}
HOST_COMMANDS = (["train", "--dataset", "synthetic", "--out", "runs/x"], ["eval", "runs/x"],
                 ["export", "runs/x", "--target", "x86"],
                 ["experiment", "paper-vs-adaptive", "--out", "experiments/x"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w", str(out),
                    str(REPO)], check=True, timeout=600, cwd=out)
    (whl,) = out.glob("edgempir-*.whl")
    return whl


@pytest.fixture(scope="module")
def device_venv(wheel, python310, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device-venv")
    subprocess.run([str(python310), "-m", "venv", str(root)], check=True, timeout=300)
    py = root / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    f"{wheel}[device]"], check=True, timeout=900)
    return root


def _installed(venv: Path) -> set[str]:
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json",
                           "--disable-pip-version-check"], capture_output=True, text=True,
                          check=True, timeout=120)
    return {d["name"].lower().replace("_", "-") for d in json.loads(proc.stdout)}


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_device_install_from_the_wheel_has_no_host_packages(device_venv):
    names = _installed(device_venv)
    assert not names & NEVER_ON_DEVICE, sorted(names & NEVER_ON_DEVICE)
    assert names <= DEVICE_DISTRIBUTIONS, f"unexpected on the device: {sorted(names - DEVICE_DISTRIBUTIONS)}"
    assert {"edgempir", "numpy", "onnxruntime", "click", "psutil"} <= names


def test_device_install_verifies_and_benches_a_real_bundle(device_venv, bundle, tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run([str(device_venv / "bin" / "edgempir"), "bench", str(bundle), "--json",  # noqa: PLW1510
                           "--batch-sizes", "1,4", "--repeats", "8", "--square-queries", "20",
                           "--square-n", "8", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["machine"]["python"].startswith("3.10."), report["machine"]["python"]
    assert not report["accuracy"]["drift"], report["accuracy"]
    assert all(s["vote_agreement"] == 1.0 for s in report["accuracy"]["sets"])


def test_device_python_api_loads_and_predicts(device_venv, bundle, tmp_path):
    code = ("import sys, numpy as np\n"
            "from edgempir.targets.device import load_bundle\n"
            "from edgempir.calib import read_set\n"
            "ens = load_bundle(sys.argv[1])\n"
            "s = read_set(ens.bundle.calib_file('clean'))\n"
            "x, y = s['input'], s['label']\n"
            "ids = ens.predict(x)\n"
            "logits = ens.member_logits(x)\n"
            "assert ids.shape == (len(x),) and logits.shape[:2] == (len(ens.specs), len(x))\n"
            "assert ens.accepted(x).dtype == bool and (ens.run(x)['class_ids'] == ids).all()\n"
            "print(float((ids == y).mean()), 'torch' in sys.modules)\n")
    proc = subprocess.run([str(device_venv / "bin" / "python"), "-c", code, str(bundle)],  # noqa: PLW1510
                          capture_output=True, text=True, timeout=300, env=_clean_env(),
                          cwd=tmp_path)  # not the checkout: its edgempir/ would shadow the wheel
    assert proc.returncode == 0, proc.stderr[-2000:]
    acc, torch_loaded = proc.stdout.split()
    assert float(acc) > 0.5 and torch_loaded == "False"


@pytest.mark.parametrize("args", HOST_COMMANDS, ids=lambda a: a[0])
def test_host_commands_in_a_device_install_say_which_extra_in_one_line(device_venv, args,
                                                                      tmp_path):
    proc = subprocess.run([str(device_venv / "bin" / "edgempir"), *args], capture_output=True,  # noqa: PLW1510
                          text=True, timeout=120, cwd=tmp_path, env=_clean_env())
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "edgempir[host]" in lines[0] and "torch" in lines[0]
    assert list(tmp_path.iterdir()) == []   # nothing half-written


def test_jetson_extra_pulls_no_onnxruntime(device_venv, wheel, tmp_path):
    report = tmp_path / "plan.json"
    subprocess.run([str(device_venv / "bin" / "python"), "-m", "pip", "install", "--dry-run",
                    "--quiet", "--disable-pip-version-check", "--ignore-installed",
                    "--report", str(report), f"{wheel}[jetson]"], check=True, timeout=600)
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "edgempir" in names
    assert not {n for n in names if n.startswith("onnxruntime")} | (names & NEVER_ON_DEVICE), names


def test_import_contracts_hold_on_the_wheel(wheel, tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "import-linter is missing: pip install -e '.[dev]'"
    zipfile.ZipFile(wheel).extractall(tmp_path)
    # cwd = the wheel's layout (edgempir/targets/... in one tree): import-linter puts the
    # working directory first on sys.path, so it analyses what the wheel installs
    proc = subprocess.run([str(lint), str(REPO / "pyproject.toml")],  # noqa: PLW1510
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert "0 broken" in proc.stdout


def test_device_side_type_checks_on_the_wheel(wheel, tmp_path):
    """mypy over the scope in pyproject.toml ([tool.mypy] files: the device side), run on the
    wheel's tree for the same reason as the import contracts."""
    mypy = Path(sys.executable).with_name("mypy")
    assert mypy.exists(), "mypy is missing: pip install -e '.[dev]'"
    zipfile.ZipFile(wheel).extractall(tmp_path)
    proc = subprocess.run([str(mypy), "--config-file", str(REPO / "pyproject.toml"),  # noqa: PLW1510
                           "--cache-dir", str(tmp_path / ".mypy_cache")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
