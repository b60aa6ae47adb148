"""``evaluate``: the entry point of ``edgempir eval`` (docs/EVAL.md).

Validates everything cheap first, loads the run and its test data once, evaluates each
protocol on its subset (the evaluator, the masking checks, the reject policies, the
early-exit measurement) and writes, per protocol, the report, the model card, the chosen
adversarial examples and the risk-coverage plot; then the side-by-side table and the plot
of every report of this configuration on disk.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgempir.attacks.base import AttackError, check_eps
from edgempir.eval.checks import masking_checks
from edgempir.eval.config import (
    PROTOCOLS,
    Config,
    choose_subset,
    get_config,
    parse_eps_list,
    select_attacks,
)
from edgempir.eval.evaluator import Evaluator
from edgempir.eval.rejection import reject_report
from edgempir.eval.report import build_report
from edgempir.eval.shard import Shard, batch_independent
from edgempir.eval.store import digest
from edgempir.models.weight_cache import cached_quant_weights


@dataclass
class EvalResult:
    reports: dict[str, dict]      # protocol -> report
    files: list[Path]
    rank: int = 0                 # under torchrun: rank 0 alone wrote the files


@dataclass
class LoadedRun:
    """A run directory with its ensemble and the test data it is evaluated on."""

    path: Path
    ens: Any
    data: Any                     # the loaded data set (edgempir.data)
    data_record: dict             # the report's ``data``
    fingerprint: str              # of the manifest and the members' weights

    @property
    def dataset(self) -> str:
        return self.ens.manifest["dataset"]["name"]

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"


@dataclass
class Options:
    """The per-call settings every protocol shares."""

    eps: str | list[float] | None
    n: int | None
    seed: int
    batch_size: int
    force: bool
    progress: bool
    echo: Callable[[str], None]
    overrides: dict[str, dict] | None
    shard: Shard = dataclasses.field(default_factory=Shard)


def evaluate(run_dir: str | os.PathLike, protocols: list[str] | tuple[str, ...] = ("adaptive",),
             config: str = "standard", attacks: list[str] | None = None,
             eps: str | list[float] | None = None, n: int | None = None, seed: int = 0,
             batch_size: int = 250, data_dir: str | None = None, force: bool = False,
             progress: bool = True, echo: Callable[[str], None] = lambda s: None,
             overrides: dict[str, dict] | None = None, threads: int | None = 1,
             allow_other_data: bool = False) -> EvalResult:
    """Evaluate a run directory; write reports, adversarial sets and the plot under eval/.

    ``overrides`` (Python API only, e.g. ``{"pgd": {"steps": 5}}``) changes attack
    parameters; the report records them and its ``config_label`` says so.

    ``allow_other_data``: evaluate on test data whose fingerprint differs from the one the
    run recorded (refused otherwise); the report's ``data`` says which data was used.

    ``threads``: torch intra-op threads (default 1). Attack batches are small and Brevitas
    adds Python overhead per layer, so a second thread gains little on an idle 2-core
    machine, and on a busy one OpenMP's spinning threads made PGD 3-20x slower (measured).
    """
    import torch

    from edgempir.distributed import eval_group

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with eval_group() as group:
            shard = Shard.of(group)
            if not shard.leader:  # the other ranks print nothing but errors
                progress, echo = False, _quiet
            options = Options(eps, n, seed, batch_size, force, progress, echo, overrides,
                              shard)
            return _evaluate(run_dir, protocols, config, attacks, data_dir, allow_other_data,
                             options)
    finally:
        torch.set_num_threads(previous_threads)


def _quiet(text: str) -> None:
    pass


def _evaluate(run_dir, protocols, config: str, attacks, data_dir, allow_other_data: bool,
              options: Options) -> EvalResult:
    # validate everything cheap before loading anything heavy
    configs = [get_config(p, config) for p in protocols]
    plans = select_attacks(configs, attacks)
    if options.overrides:
        plans = [tuple(_overridden(p, options.overrides) for p in plan) for plan in plans]
    if options.batch_size < 1:
        raise AttackError(f"--batch-size {options.batch_size}: must be at least 1")
    run = _load(Path(run_dir), data_dir, allow_other_data, options.echo)
    files: list[Path] = []
    reports: dict[str, dict] = {}
    # the members' weights are frozen for the whole evaluation: quantized once, not per step
    with batch_independent(run.ens.members), cached_quant_weights(run.ens.members):
        for cfg, plan in zip(configs, plans):
            report, written = _evaluate_protocol(run, cfg, plan, options, reports)
            files += written
            reports[cfg.protocol] = report
    if options.shard.leader:  # one writer: rank 0
        files += _write_side_by_side(run, config, reports)
    return EvalResult(reports=reports, files=files, rank=options.shard.rank)


def _load(run_path: Path, data_dir, allow_other_data: bool, echo) -> LoadedRun:
    """The run, its test data (refused when it is not the data the run was trained on,
    unless allowed) and the run's fingerprint."""
    from edgempir.data import load_dataset
    from edgempir.errors import DataError
    from edgempir.fsutil import sha256_file
    from edgempir.rundir import data_used, load_run

    ens = load_run(run_path)
    manifest = ens.manifest
    dataset = manifest["dataset"]["name"]
    ds = load_dataset(dataset, data_dir)
    if tuple(ds.input_shape) != tuple(manifest["dataset"]["input_shape"]):
        raise DataError(f"{dataset} at {ds.source} has images {list(ds.input_shape)} but the "
                        f"run was trained on {manifest['dataset']['input_shape']}; point "
                        "--data-dir at the data the run was trained on")
    # rundir.data_used: the check shared with export
    data_record = data_used(manifest, ds, ("test",), allow_other_data, echo)
    fingerprint = digest({"manifest": sha256_file(run_path / "manifest.json"),
                          "members": [sha256_file(run_path / m["file"])
                                      for m in manifest["members"]]})
    return LoadedRun(run_path, ens, ds, data_record, fingerprint)


def _evaluator(run: LoadedRun, cfg: Config, plan, options: Options) -> Evaluator:
    """The evaluator of one protocol on its test subset (its partial results discarded
    first with ``force``)."""
    import torch

    from edgempir.data import to_float

    ds = run.data
    n_images = int(options.n if options.n is not None else (cfg.n or len(ds.y_test)))
    indices = choose_subset(len(ds.y_test), n_images, options.seed)
    world = options.shard.world
    if world > len(indices):
        raise AttackError(f"{world} ranks for {len(indices)} test images: every rank needs "
                          f"at least one; use at most {len(indices)} ranks or a larger --n")
    x = torch.from_numpy(to_float(ds.x_test[indices]))
    y = torch.from_numpy(ds.y_test[indices].astype(np.int64))
    partial_dir = run.eval_dir / "partial" / f"{cfg.protocol}-{cfg.name}"
    if options.force:
        _discard(partial_dir, options.shard)
    return Evaluator(run.ens, x, y, indices, cfg, plan, seed=options.seed,
                     batch_size=options.batch_size, partial_dir=partial_dir,
                     run_fingerprint=run.fingerprint, progress=options.progress,
                     echo=options.echo, shard=options.shard)


def _overridden(planned, overrides: dict[str, dict]):
    """``planned`` with ``overrides[its name]`` applied to every run of it, those aimed at
    a member alone included (their own settings, e.g. quick's PGD-40, give way)."""
    if planned.name not in overrides:
        return planned
    change = overrides[planned.name]
    return dataclasses.replace(
        planned, params={**planned.params, **change},
        member_params={k: v for k, v in planned.member_params.items() if k not in change})


def _discard(partial_dir: Path, shard: Shard) -> None:
    """``--force``: rank 0 removes the kept results, then the other ranks what is left of
    theirs (a folder not shared with rank 0); nothing is written before all are done."""
    if shard.leader and partial_dir.exists():
        shutil.rmtree(partial_dir)
    shard.all_gather(None)  # a barrier
    if not shard.leader and partial_dir.exists():
        shutil.rmtree(partial_dir, ignore_errors=True)
    shard.all_gather(None)


def _evaluate_protocol(run: LoadedRun, cfg: Config, plan, options: Options,
                       earlier: dict[str, dict]) -> tuple[dict, list[Path]]:
    """One protocol's report, and the files written for it."""
    t0 = time.perf_counter()
    given = options.eps
    eps_list = given if isinstance(given, list) else \
        parse_eps_list(given, run.dataset, cfg.protocol)
    eps_list = [check_eps(e) for e in eps_list]
    ev = _evaluator(run, cfg, plan, options)
    clean_pred, _, clean_conf = ev.score(ev.x)
    results, examples, checks, reject = [], None, [], None
    unbounded: dict = {}
    for k, e in enumerate(eps_list):
        res = ev.evaluate_eps(e, clean_pred, keep_examples=(k == 0), unbounded_cache=unbounded)
        if k == 0:  # examples, masking checks and reject policies at the first eps
            examples = res.pop("_examples")
            if cfg.checks:
                checks = masking_checks(ev, e, res, cfg.checks)
            reject = _reject(ev, cfg, plan, e, clean_pred, clean_conf, options.overrides)
        results.append(res)
    disagreement = _slow_path_measurement(ev, eps_list, cfg, options.echo,
                                          (options.overrides or {}).get("disagree"))
    waits = [round(w, 2) for w in options.shard.all_gather(options.shard.waited)]
    report = build_report(cfg=cfg, plan=plan, ev=ev, run=run, data_record=run.data_record,
                          eps_list=eps_list, n_test=len(run.data.y_test), seed=options.seed,
                          overrides=options.overrides, results=results, checks=checks,
                          reject=reject, disagreement=disagreement,
                          seconds=time.perf_counter() - t0, rank_wait_seconds=waits)
    if not options.shard.leader:  # every rank holds the report; rank 0 writes it
        return report, []
    return report, _write_protocol(run, cfg, report, examples, ev, eps_list, earlier)


def _reject(ev: Evaluator, cfg: Config, plan, eps: float, clean_pred, clean_conf,
            overrides) -> dict | None:
    """The reject policies' report, when the configuration has one and the plan keeps
    vote-pgd (majority's aimed attacker: no reject report without it)."""
    if not cfg.reject or not any(p.name == "vote-pgd" for p in plan):
        return None
    # overrides["reject"] (Python API) shortens the aimed attacks like others
    settings = {**cfg.reject, **(overrides or {}).get("reject", {})}
    return reject_report(ev, eps, {"preds": clean_pred, "ref_conf": clean_conf}, settings)


def _write_protocol(run: LoadedRun, cfg: Config, report: dict, examples, ev: Evaluator,
                    eps_list: list[float], earlier: dict[str, dict]) -> list[Path]:
    """The report, the model card, the risk-coverage plot and the adversarial examples."""
    from edgempir.calib import write_set
    from edgempir.fsutil import atomic_write_json
    from edgempir.model_card import model_card
    from edgempir.reject import risk_coverage_plot
    from edgempir.rundir import write_model_card

    files = []
    report_path = run.eval_dir / f"{cfg.protocol}-{cfg.name}.json"
    atomic_write_json(report_path, report)
    files.append(write_model_card(run.path, cfg.protocol, cfg.name,
                                  model_card(report, run.ens.manifest, run.path.name,
                                             earlier.get("paper"))))
    if "reject" in report:
        plot = run.eval_dir / f"risk-coverage-{cfg.name}.png"
        risk_coverage_plot(report, plot)
        files.append(plot)
    adv_path = run.eval_dir / f"adv-{cfg.protocol}.npz"
    write_set(adv_path, examples, ev.y.numpy(), index=ev.indices.astype(np.int64),
              eps=np.float32(eps_list[0]), protocol=np.array(cfg.protocol),
              config=np.array(cfg.name))
    return files + [report_path, adv_path]


def _write_side_by_side(run: LoadedRun, config: str, reports: dict[str, dict]) -> list[Path]:
    """The table and the plot of every report of this configuration on disk (a protocol
    evaluated by an earlier call included)."""
    from edgempir.errors import EdgempirError
    from edgempir.eval.table import accuracy_plot, eval_tables
    from edgempir.fsutil import atomic_write_text
    from edgempir.reject import reject_table
    from edgempir.validate import read_json

    all_reports = dict(reports)
    for proto in PROTOCOLS:
        other = run.eval_dir / f"{proto}-{config}.json"
        if proto not in all_reports and other.is_file():
            try:
                all_reports[proto] = read_json(other)
            except (OSError, EdgempirError):  # damaged: this table goes without it
                pass
    table = eval_tables(all_reports, run.ens.manifest)
    table += "".join(f"\n\n{reject_table(r)}" for r in all_reports.values() if "reject" in r)
    table_path = run.eval_dir / f"table-{config}.txt"
    atomic_write_text(table_path, table + "\n")
    plot_path = run.eval_dir / "acc-vs-eps.png"
    accuracy_plot(all_reports, plot_path)
    return [table_path, plot_path]


def _slow_path_measurement(ev: Evaluator, eps_list, cfg: Config,
                           echo: Callable[[str], None], settings: dict | None) -> dict | None:
    """Issue 18: the early-exit vote's slow-path share under attack (adaptive protocol
    only; edgempir/attacks/disagree.py), per image seeded and shared over the ranks.
    ``settings``: ``overrides["disagree"]`` (Python API: ``steps``, ``restarts``)."""
    from edgempir.attacks.disagree import disagreement_report

    if cfg.protocol != "adaptive" or not eps_list:
        return None
    ids = ev.torch.from_numpy(ev.indices.astype(np.int64))

    def map_rows(flags, n):
        return ev.shard.map_rows(lambda rows: [t.numpy() for t in flags(rows)], n)

    out = disagreement_report(ev.ens, ev.x, eps_list[0], cfg.name, cfg.protocol, ev.seed,
                              ev.batch_size, ids=ids, map_rows=map_rows, settings=settings)
    if out is not None:
        echo(f"{out['description']}: {100 * out['clean_slow_path']:.1f}% clean, "
             f"{100 * out['attacked_slow_path']:.1f}% under attack")
    return out
