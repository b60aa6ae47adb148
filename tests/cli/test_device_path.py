"""The device path (``edgempir bench``) needs no torch, no brevitas, no onnx, and Python 3.10.

- bench runs in a subprocess where importing torch, brevitas or onnx raises;
- ``import edgempir``, ``import edgempir.cli`` and ``--help`` leave torch out of sys.modules;
- every module the device path imports passes a Python 3.10 check: ruff's syntax check
  for target py310 and vermin's stdlib-API check (skipped, with the reason, where the tool
  is missing), and compiles under a real Python 3.10 where one is installed;
- (slow) bench runs in a Python 3.10 virtual environment holding only the ``device`` extra.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "brevitas", "onnx")
# what bench, build and the bundle readers import; the bench run below checks that nothing
# outside this closure is loaded, so the list cannot silently fall behind
DEVICE_ENTRY_MODULES = (
    "edgempir", "edgempir.cli", "edgempir.cli.bench_cmd", "edgempir.cli.build_cmd",
    "edgempir.targets.device.bench", "edgempir.targets.device.square", "edgempir.targets.device.bundle",
    "edgempir.targets.device.runtime", "edgempir.targets.device.onnxruntime", "edgempir.targets.device.tensorrt",
    "edgempir.calib", "edgempir.vote", "edgempir.tables", "edgempir.fsutil",
)

SITECUSTOMIZE = '''
import atexit, os, sys
def _dump():
    out = os.environ.get("EDGEMPIR_TEST_MODULES_DIR")
    if out:
        files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})
        with open(os.path.join(out, f"modules-{os.getpid()}.txt"), "w") as f:
            f.write("\\n".join(x for x in files if x))
atexit.register(_dump)
'''


@pytest.fixture(scope="session")
def blocked_path(tmp_path_factory) -> Path:
    """A folder to put first on PYTHONPATH: torch, brevitas and onnx raise on import."""
    d = tmp_path_factory.mktemp("no-torch")
    for name in BLOCKED:
        (d / name).mkdir()
        (d / name / "__init__.py").write_text(
            f'raise ImportError("{name} is not available on the device path")\n')
    (d / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return d


def blocked_env(blocked: Path, **extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.update(extra)
    return env


def repo_files(module_files) -> set[Path]:
    out = set()
    for f in module_files:
        p = Path(f).resolve()
        if p.suffix == ".py" and REPO in p.parents and ".venv" not in p.parts:
            out.add(p)
    return out


# ----------------------------------------------------------------- no torch at import
def test_import_and_help_leave_torch_out():
    code = (
        "import sys\n"
        "import edgempir, edgempir.cli\n"
        "from edgempir.cli import main\n"
        "for args in (['--help'], ['bench', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        f"print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: PLW1510
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout[-500:]
    assert "Example:" in proc.stdout and "--batch-sizes" in proc.stdout
    assert "default: 1,8,32" in proc.stdout


# ----------------------------------------------------------------- bench without torch
def _bench_without_torch(bundle: Path, blocked: Path, tmp_path: Path) -> tuple[dict, set]:
    modules_dir = tmp_path / "modules"
    modules_dir.mkdir()
    out = tmp_path / "report.json"
    env = blocked_env(blocked, EDGEMPIR_TEST_MODULES_DIR=str(modules_dir))
    proc = subprocess.run(  # noqa: PLW1510
        [sys.executable, "-m", "edgempir.cli", "bench", str(bundle), "--json",
         "--batch-sizes", "1,4", "--repeats", "15", "--warmup", "2", "--square-queries", "25",
         "--square-n", "16", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    loaded: set[str] = set()
    for f in modules_dir.glob("modules-*.txt"):
        loaded |= set(f.read_text().splitlines())
    assert len(list(modules_dir.glob("modules-*.txt"))) == 3   # bench + 2 memory workers
    return report, loaded


@pytest.mark.parametrize("which", ["tiny", "exported"])
def test_bench_runs_where_torch_cannot_be_imported(which, request, blocked_path, tmp_path):
    from edgempir.targets.device.bench import validate_report

    bundle = request.getfixturevalue("tiny_bundle" if which == "tiny" else "bundle")
    report, loaded = _bench_without_torch(bundle, blocked_path, tmp_path)
    assert validate_report(report) == []
    assert not [f for f in loaded if any(f"/{b}/" in f for b in BLOCKED)]
    # the static py310 checks below cover every repo module this run imported
    closure = _device_closure(blocked_path)
    assert repo_files(loaded) <= closure, sorted(repo_files(loaded) - closure)
    if which == "exported":
        # DESIGN.md: the deployed engine matches the host's figures within 0.5 points
        assert not report["accuracy"]["drift"], report["accuracy"]
        assert all(s["vote_agreement"] == 1.0 for s in report["accuracy"]["sets"])


# ----------------------------------------------------------------- Python 3.10
_closure_cache: dict[str, set] = {}


def _device_closure(blocked: Path) -> set[Path]:
    """Repo files imported by the device entry modules (torch blocked while importing)."""
    if "files" not in _closure_cache:
        code = ("import importlib, sys\n"
                f"for m in {DEVICE_ENTRY_MODULES!r}:\n"
                "    try:\n"
                "        importlib.import_module(m)\n"
                "    except ModuleNotFoundError as e:\n"
                "        if e.name != m:\n"
                "            raise\n"
                "print('\\n'.join(getattr(m, '__file__', None) or '' "
                "for m in list(sys.modules.values())))\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: PLW1510
                              env=blocked_env(blocked), timeout=120, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # `python -m edgempir.cli` also runs cli/__main__.py, which cannot be imported here
        _closure_cache["files"] = repo_files(proc.stdout.splitlines()) | {REPO / "cli" /
                                                                          "__main__.py"}
    return _closure_cache["files"]


def _tool(name: str) -> str | None:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name)


def test_device_modules_have_no_syntax_newer_than_python310(blocked_path):
    ruff = _tool("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install ruff, part of the dev extra)")
    files = sorted(str(f) for f in _device_closure(blocked_path))
    assert any(f.endswith("bench.py") for f in files)
    # E9: syntax errors, judged for Python 3.10 (3.11+ syntax is reported as invalid-syntax);
    # F821/F822/F823: names that do not exist (a removed stdlib name fails at run time)
    proc = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--target-version",  # noqa: PLW1510
                           "py310", "--select", "E9,F821,F822,F823", *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_device_modules_use_no_stdlib_api_newer_than_python310(blocked_path):
    vermin = _tool("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install vermin, part of the dev extra)")
    files = sorted(str(f) for f in _device_closure(blocked_path))
    proc = subprocess.run([vermin, "-t=3.10-", "--violations", "--no-tips", "--no-parse-comments",  # noqa: PLW1510
                           "--eval-annotations", "--backport", "typing", *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_device_modules_compile_under_python310(blocked_path, python310):
    files = sorted(str(f) for f in _device_closure(blocked_path))
    code = ("import sys\n"
            "for f in sys.argv[1:]:\n"
            "    compile(open(f, encoding='utf-8').read(), f, 'exec')\n")
    proc = subprocess.run([str(python310), "-c", code, *files], capture_output=True, text=True,  # noqa: PLW1510
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
