"""Helpers for scripts/mutation.sh (cosmic-ray sessions).

    python scripts/mutation_tools.py skip-annotations SESSION.sqlite MODULE.py
    python scripts/mutation_tools.py report SESSION.sqlite
    python scripts/mutation_tools.py retest-survivors SESSION.sqlite

skip-annotations marks the pending jobs that mutate a type annotation as skipped. Every
module mutated here starts with ``from __future__ import annotations``: annotations
are kept as strings and never evaluated (nothing calls typing.get_type_hints on them), so
``int | None`` -> ``int ^ None`` cannot change behaviour. Such mutants are equivalent by
construction; skipping them before the run saves about a sixth of the jobs.

retest-survivors makes the survivors pending again (after tests were added for them);
``cosmic-ray exec`` then runs only those.

report prints the kill rate (killed / mutants run; skipped ones excluded, timeouts count as
killed: the tests did not pass) and every survivor with its diff.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    tree = ast.parse(source)
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body):
        return []  # annotations are evaluated: mutating them is not equivalent
    spans = []
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            notes.append(node.returns)
        elif isinstance(node, (ast.arg, ast.AnnAssign)):
            notes.append(node.annotation)
        for n in notes:
            if n is not None:
                spans.append(((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)))
    return spans


def skip_annotations(db_path: str, module: str) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(Path(module).read_text())
    skipped = 0
    with use_db(db_path, WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            m = item.mutations[0]
            # cosmic-ray positions: 1-based lines, 0-based columns, like ast's
            start = (m.start_pos[0], m.start_pos[1])
            if any(a <= start < b for a, b in spans):
                db.set_result(item.job_id, WorkResult(
                    worker_outcome=WorkerOutcome.SKIPPED,
                    output="type annotation under 'from __future__ import annotations': "
                           "never evaluated, an equivalent mutant"))
                skipped += 1
    print(f"{module}: {skipped} annotation mutants skipped (equivalent)")
    return 0


def report(db_path: str) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    run = killed = pending = skipped = 0
    survivors = []
    with use_db(db_path, WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                skipped += 1
                continue
            run += 1
            if result.test_outcome == TestOutcome.SURVIVED:
                survivors.append((item, result))
            else:
                killed += 1
        pending = sum(1 for _ in db.pending_work_items)
    rate = 100.0 * killed / run if run else float("nan")
    print(f"{db_path}: {run} mutants run, {killed} killed ({rate:.1f}%), "
          f"{len(survivors)} survived, {skipped} skipped (annotations), {pending} pending")
    for item, result in survivors:
        m = item.mutations[0]
        print(f"  survived: {m.module_path}:{m.start_pos[0]} {m.operator_name} "
              f"#{m.occurrence}")
        for line in (result.diff or "").splitlines():
            if line[:1] in "+-" and line[:3] not in ("+++", "---"):
                print(f"    {line}")
    return 0


def retest_survivors(db_path: str) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        n = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    print(f"{db_path}: {n} survivors pending again")
    return 0


if __name__ == "__main__":
    commands = {"skip-annotations": skip_annotations, "report": report,
                "retest-survivors": retest_survivors}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(commands)}}} ARGS...")
    sys.exit(commands[sys.argv[1]](*sys.argv[2:]))
