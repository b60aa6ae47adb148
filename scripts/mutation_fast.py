"""A faster executor for the cosmic-ray sessions of scripts/mutation.sh.

    python scripts/mutation_fast.py cover CONFIG.toml COVER.json
    python scripts/mutation_fast.py exec CONFIG.toml SESSION.sqlite COVER.json

cosmic-ray generates the mutants and keeps the session (``cosmic-ray init``, the report of
scripts/mutation_tools.py); ``cosmic-ray exec`` runs the whole test selection of the config
in a new interpreter per mutant, which on this project's 2 shared cores costs 5-15 s a
mutant (torch and torchattacks imported, every test run) and makes the attack modules
(~2,900 mutants) a day's work. This executor runs the same mutants with the same tests,
cheaper in two ways that cannot change a verdict:

- ``cover`` runs the config's test selection once on the unmutated code and records, per
  test, the module's lines it executes (cached in .mutation/cover-*.json for every module
  tested with the same selection, while no test file and no commit changed) (lines run while importing or collecting count for
  every test). ``exec`` then runs, per mutant, only the tests that execute some line of the
  statement the mutation is in (the smallest enclosing statement, so a mutation in a
  multi-line expression or an ``if`` condition is covered by every test that runs any line
  of it): a test that runs none of those lines runs the unmutated code, so it passes
  exactly as it did on the unmutated module. A mutant whose statement no test executes
  survives without a run (output: "no test of the selection executes this statement").
- the mutants run in forks of one process that has imported torch, numpy, torchattacks,
  brevitas, ONNX and pytest once (never edgempir: every fork imports the project, and so
  the mutated file, afresh; no bytecode is written or read for the mutated module).

Verdicts are cosmic-ray's: pytest exit 0 = survived, anything else (a failure, an error, a
crash) = killed; a fork still running after the config's ``timeout`` is killed and counts
as killed (as a cosmic-ray timeout).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# pytest options a per-mutant run keeps; selection options (-k, paths) are replaced by the
# node ids the coverage run recorded
RUN_OPTS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


def read_config(cfg_path: str) -> dict:
    with open(cfg_path, "rb") as f:
        return tomllib.load(f)["cosmic-ray"]


def selection_args(cfg: dict) -> list[str]:
    """The pytest arguments of the config's test-command (after ``pytest``), without -x."""
    words = shlex.split(cfg["test-command"])
    args = words[words.index("pytest") + 1:]
    return [a for a in args if a != "-x"]


# ------------------------------------------------------------------ coverage per test
class LineRecorder:
    """A pytest plugin recording the project lines (edgempir/, targets/, calib/) that each
    test executes: one coverage run serves every module tested with the same selection."""

    def __init__(self):
        self.prefixes = tuple(str(ROOT / d) + os.sep for d in ("edgempir", "targets", "calib"))
        self.current = "<collection>"
        self.lines: dict[str, dict[str, set[int]]] = {self.current: {}}
        self.seconds: dict[str, float] = {}

    def _add(self, frame):
        name = frame.f_code.co_filename
        self.lines[self.current].setdefault(name, set()).add(frame.f_lineno)

    def trace_calls(self, frame, event, arg):
        if frame.f_code.co_filename.startswith(self.prefixes):
            self._add(frame)
            return self.trace_lines
        return None

    def trace_lines(self, frame, event, arg):
        if event == "line":
            self._add(frame)
        return self.trace_lines

    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        self.lines.setdefault(item.nodeid, {})
        self._t0 = time.perf_counter()

    def pytest_runtest_logfinish(self, nodeid, location):
        self.seconds[nodeid] = time.perf_counter() - self._t0
        self.current = "<collection>"


def cache_key(cfg: dict) -> str:
    """The selection and the content of every test and project file: a cached coverage run
    is reused only while none of them changed."""
    import hashlib

    h = hashlib.sha256(cfg["test-command"].encode())
    for top in ("tests", "edgempir", "targets", "calib"):
        for f in sorted((ROOT / top).rglob("*.py")):
            h.update(str(f).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def cover(cfg_path: str, out_path: str) -> int:
    import threading

    import pytest

    cfg = read_config(cfg_path)
    target = str((ROOT / cfg["module-path"]).resolve())
    cache = ROOT / ".mutation" / f"cover-{cache_key(cfg)}.json"
    if not cache.exists():
        rec = LineRecorder()
        sys.settrace(rec.trace_calls)
        threading.settrace(rec.trace_calls)
        rc = pytest.main(selection_args(cfg), plugins=[rec])
        sys.settrace(None)
        threading.settrace(None)
        if rc != 0:
            print(f"mutation_fast: the unmutated selection fails (pytest exit {rc})",
                  file=sys.stderr)
            return 2
        cache.write_text(json.dumps({
            "seconds": rec.seconds,
            "lines": {t: {f: sorted(v) for f, v in files.items()}
                      for t, files in rec.lines.items()}}))
    full = json.loads(cache.read_text())
    tests = list(full["seconds"])
    data = {"module": cfg["module-path"], "tests": tests, "seconds": full["seconds"],
            "lines": {t: full["lines"].get(t, {}).get(target, [])
                      for t in ["<collection>", *tests]}}
    Path(out_path).write_text(json.dumps(data))
    print(f"mutation_fast: {len(tests)} tests in the selection of {cfg['module-path']}")
    return 0


# ------------------------------------------------------------------ per-mutant runs
def statement_lines(source: str, line: int) -> range:
    """The lines of the smallest statement containing ``line``."""
    import ast

    best = None
    for node in ast.walk(ast.parse(source)):
        inside = isinstance(node, ast.stmt) and node.lineno <= line <= node.end_lineno
        if inside and (best is None or node.end_lineno - node.lineno
                       < best.end_lineno - best.lineno):
            best = node
    return range(best.lineno, best.end_lineno + 1) if best else range(line, line + 1)


def tests_for(cov: dict, lines: range) -> list[str]:
    """Tests executing any of ``lines``, fastest first (every test when collection did)."""
    hit = set(lines)
    if hit & set(cov["lines"]["<collection>"]):
        chosen = list(cov["tests"])
    else:
        chosen = [t for t in cov["tests"] if hit & set(cov["lines"].get(t, ()))]
    return sorted(chosen, key=lambda t: cov["seconds"].get(t, 0.0))


def run_fork(args: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    """pytest.main(args) in a fork; (exit code or None on timeout, its output)."""
    import pytest

    pid = os.fork()
    if pid == 0:  # the child: fresh imports of the project, no bytecode written
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # only the parent restores the module
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.dont_write_bytecode = True
        try:
            code = int(pytest.main(args))
        except BaseException:  # noqa: BLE001 - any crash kills the mutant
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.05)
    return code, log.read_text(errors="replace")[-4000:]


def preload() -> None:
    """Import the heavy third-party libraries once, before forking (never edgempir)."""
    import importlib

    for name in ("numpy", "torch", "torchattacks", "brevitas", "onnx", "onnxruntime", "scipy",
                 "hypothesis", "pytest"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    assert not any(m == "edgempir" or m.startswith("edgempir.") for m in sys.modules), \
        "a preloaded library imported edgempir: the forks would not see the mutant"


def _refuse_a_changed_module(module: Path) -> None:
    """Mutants are applied to the module as committed: a module with uncommitted changes
    (a mutant left by a run killed with SIGKILL) would shift every mutant."""
    diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(module)], cwd=ROOT,
                          check=False)
    if diff.returncode != 0:
        sys.exit(f"mutation_fast: {module} differs from HEAD (a mutant left by a killed run?);"
                 f" `git checkout -- {module.relative_to(ROOT)}` restores it")


def execute(cfg_path: str, db_path: str, cov_path: str) -> int:
    from cosmic_ray.mutating import _make_diff, use_mutation
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    cfg = read_config(cfg_path)
    cov = json.loads(Path(cov_path).read_text())
    module = ROOT / cfg["module-path"]
    _refuse_a_changed_module(module)
    # a stopped run (kill, pkill) leaves through use_mutation's restore, not with the
    # mutant on disk, where the next run would take it for the module
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    source = module.read_text()
    pycache = module.parent / "__pycache__"
    log = Path(db_path).with_suffix(".log")
    preload()
    with use_db(db_path, WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
        print(f"mutation_fast: {len(pending)} mutants to run", flush=True)
        for n, item in enumerate(pending, 1):
            m = item.mutations[0]
            tests = tests_for(cov, statement_lines(source, m.start_pos[0]))
            op = get_operator(m.operator_name)(**(getattr(m, "operator_args", None) or {}))
            t0 = time.monotonic()
            with use_mutation(Path(m.module_path), op, m.occurrence) as (before, after):
                if after is None:
                    db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NO_TEST))
                    continue
                diff = "\n".join(_make_diff(before, after, m.module_path))
                if not tests:
                    code, out = 0, "no test of the selection executes this statement"
                else:
                    for pyc in pycache.glob(f"{module.stem}.*.pyc"):
                        pyc.unlink()
                    code, out = run_fork(RUN_OPTS + tests, float(cfg["timeout"]), log)
            outcome = TestOutcome.SURVIVED if code == 0 else TestOutcome.KILLED
            verdict = "timeout" if code is None else f"pytest exit {code}"
            db.set_result(item.job_id, WorkResult(
                worker_outcome=WorkerOutcome.NORMAL, test_outcome=outcome, diff=diff,
                output=f"{verdict}; {len(tests)} tests\n{out}"))
            print(f"  [{n}/{len(pending)}] line {m.start_pos[0]} {m.operator_name} "
                  f"#{m.occurrence}: {outcome.value} ({verdict}, {len(tests)} tests, "
                  f"{time.monotonic() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    commands = {"cover": cover, "exec": execute}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(commands)}}} ARGS...")
    sys.exit(commands[sys.argv[1]](*sys.argv[2:]))
