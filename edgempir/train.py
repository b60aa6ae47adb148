"""One training loop for every member (Brevitas QAT for the low-bit ones), with resume.

Determinism: member i is initialised from ``seed`` and i; epoch e shuffles with a numpy
generator seeded from (seed, i, e), and torch's generator is reseeded at every epoch. A run
resumed from the checkpoint of its last finished epoch therefore computes exactly what an
uninterrupted run computes. The learning rate follows a cosine schedule over all steps,
derived from the step number, so it needs no saved state either. Preset ``paper`` trains
with the reference's constant learning rate (``schedule="constant"``) and, on CIFAR-10, label
smoothing 0.1.

One epoch (order, batches, steps) is edgempir.epoch; under torchrun (``--distributed
members|ddp``) the process group and its helpers are edgempir.distributed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgempir import provenance, rundir
from edgempir.contract import reference_index
from edgempir.data import DEFAULT_EPS
from edgempir.epoch import Member, member_seed, predict_test_split, train_epoch
from edgempir.errors import EdgempirError, RunDirError, TrainingError
from edgempir.fsutil import atomic_write_json, fsync_dir, show_path, swap_in, write_error
from edgempir.members import MemberSpec
from edgempir.validate import loads_json, read_json

DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3


@dataclass
class TrainConfig:
    out: str
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    arch: str = "mnist"
    members: list[MemberSpec] = field(default_factory=list)
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    seed: int = 0
    combiner: str = "vote"
    preset: str | None = "edge"    # None when --members/--bits chose the members
    quantizer: str = "edge"        # edgempir.models.QUANTIZERS
    schedule: str = "cosine"       # or "constant" (the reference's)
    label_smoothing: float = 0.0
    threads: int | None = None
    augment: str = "none"          # "hflip": random horizontal flips (clothes, CIFAR objects)
    adv_train: str = "none"        # "pgd" (Madry) or "trades"
    adv_eps: float | None = None   # default: the data set's eval eps
    adv_steps: int = 10
    adv_step_size: float | None = None  # default 2.5 * eps / steps
    trades_beta: float = 6.0
    image_size: int | None = None  # --dataset folder: side the images are resized to
    workers: int = 2               # --dataset folder: DataLoader processes decoding images
    distributed: str = "none"      # "members" or "ddp" under torchrun (edgempir.distributed)

    def to_json(self) -> dict:
        """The settings that decide the result (compared on --resume)."""
        d = dataclasses.asdict(self)
        d["members"] = [m.name for m in self.members]
        # where the data is, how many processes load it or train: same result either way
        for key in ("out", "threads", "data_dir", "workers", "distributed"):
            d.pop(key)
        if d["image_size"] is None:  # runs of the other data sets keep their old settings
            d.pop("image_size")
        return d


def versions() -> dict[str, str | None]:
    return provenance.versions("torch", "brevitas", "numpy")


SCHEDULES = ("cosine", "constant")


def _optimizer_state(opt) -> dict:
    """Adam's state as flat tensors (safetensors takes tensors only)."""
    import torch

    flat = {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            flat[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return flat


def _load_optimizer_state(opt, flat: dict) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in flat.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _restore(cfg: TrainConfig, data, work: Path, m: Member, log: Callable[[str], None]):
    """The member's model and optimizer, from its checkpoint when an earlier train was
    killed; (model, optimizer, history, first epoch to train, checkpoint path)."""
    import torch

    torch.manual_seed(member_seed(cfg.seed, m.index))
    model = rundir.build_model_for(cfg.arch, m.spec, data, cfg.quantizer)
    ckpt = rundir.checkpoint_path(work, m.index, m.spec)
    history: list[dict] = []
    start_epoch = 0
    optim_state = None
    if ckpt.is_file():
        tensors, meta = rundir.load_weights(ckpt)
        history = _load_saved(ckpt, model, {k[len("model."):]: v for k, v in tensors.items()
                                            if k.startswith("model.")}, meta)
        optim_state = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        start_epoch = _saved_epoch(ckpt, meta, cfg.epochs)
        log(f"member {m.index} ({m.spec}): resuming after epoch {start_epoch}")
    # The optimizer is made only now: Brevitas replaces its scale parameters when a state
    # dict is loaded, and an optimizer made before would keep updating the old ones.
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if optim_state is not None:
        try:
            _load_optimizer_state(opt, optim_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise _unusable(ckpt, e) from None
    return model, opt, history, start_epoch, ckpt


def _ddp_group(cfg: TrainConfig, group):
    """The group when this member is trained by every rank together (strategy ddp)."""
    return group if group is not None and cfg.distributed == "ddp" else None


def train_member(cfg: TrainConfig, data, work: Path, m: Member, log: Callable[[str], None],
                 progress: bool, group=None) -> tuple[object, list[dict]]:
    """Train one member from its checkpoint (if any) to the last epoch, saving a checkpoint
    after every epoch. Strategy ddp: every rank runs this for the same member."""
    model, opt, history, start_epoch, ckpt = _restore(cfg, data, work, m, log)
    ddp = _ddp_group(cfg, group)
    trained = model
    if ddp is not None:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model)  # checkpoints hold the plain model
    for epoch in range(start_epoch, cfg.epochs):
        stats = train_epoch(cfg, data, trained, opt, m, epoch, progress, ddp)
        if ddp is not None:
            from edgempir.distributed import check_in_sync, sum_over_ranks

            sum_over_ranks(stats)
        seconds = stats.seconds
        logits, y = predict_test_split(model, data, cfg.workers)
        test_acc = float((logits.argmax(1) == y).float().mean())
        seen = stats.seen
        history.append({"epoch": epoch + 1, "loss": stats.loss_sum / seen,
                        "train_accuracy": stats.correct / seen, "test_accuracy": test_acc,
                        "seconds": seconds, "images_per_second": seen / seconds})
        if cfg.adv_train != "none":
            history[-1]["train_adversarial_accuracy"] = stats.adv_correct / seen
        if stats.skipped:
            history[-1]["skipped"] = [{"path": p, "reason": r}
                                      for p, r in sorted(stats.skipped.items())]
            log(f"member {m.index} ({m.spec}) epoch {epoch + 1}: {len(stats.skipped)} "
                f"image(s) did not decode and were skipped, e.g. {next(iter(stats.skipped))}")
        if ddp is None or ddp.leader:  # ddp: the ranks hold the same weights
            state = {f"model.{k}": v for k, v in model.state_dict().items()}
            state.update(_optimizer_state(opt))
            rundir.save_weights(ckpt, state, {"epoch": str(epoch + 1),
                                              "history": json.dumps(history)})
        if ddp is not None:
            check_in_sync(model, f"member {m.index} ({m.spec}) after epoch {epoch + 1}")
            ddp.barrier()
        log(f"member {m.index} ({m.spec}) epoch {epoch + 1}/{cfg.epochs}: loss "
            f"{stats.loss_sum / seen:.4f} train acc {stats.correct / seen:.4f} test acc "
            f"{test_acc:.4f} ({seconds:.1f} s, {seen / seconds:.0f} img/s)")
    return model.eval(), history


def _unusable(ckpt: Path, e: BaseException) -> RunDirError:
    # torch's message: a header line, then the missing/unexpected keys or shapes
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    first = (text[:200] + "...") if len(text) > 200 else (text or type(e).__name__)
    return RunDirError(f"{show_path(ckpt)} does not fit this run ({first}); delete it to "
                       "retrain that member, or rerun with --force to start over")


def _load_saved(path: Path, model, state: dict, meta: dict) -> list[dict]:
    """Load weights saved by an earlier (killed) train of this run into ``model``; return
    the history saved with them. A file that does not fit is a one-line RunDirError."""
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:  # wrong shapes or names
        raise _unusable(path, e) from None
    history = loads_json(meta.get("history", "null"), f"{show_path(path)} metadata",
                         error=RunDirError, hint="delete the file or rerun with --force")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise _unusable(path, ValueError("its history is not a list of epochs"))
    return history


def _saved_epoch(path: Path, meta: dict, epochs: int) -> int:
    epoch = str(meta.get("epoch", ""))
    if not epoch.isdigit() or not 1 <= int(epoch) <= epochs:
        raise _unusable(path, ValueError(f"epoch {epoch[:20]!r} is not 1..{epochs}"))
    return int(epoch)


def _check_out(cfg: TrainConfig, resume: bool, force: bool) -> Path:
    out = Path(cfg.out)
    work = rundir.partial_dir(out)
    if out.exists() and not force:
        if resume and (out / rundir.MANIFEST).is_file():
            return out  # already complete
        raise RunDirError(f"{out} already exists; pass --force to replace it or choose another --out")
    if work.exists():
        if force:
            shutil.rmtree(work)
        elif not resume:
            raise RunDirError(f"an unfinished run is at {work}; pass --resume to continue it or "
                              "--force to start over")
        elif (work / "config.json").is_file():
            saved = read_json(work / "config.json", error=RunDirError,
                              hint="rerun with --force to start over")
            if not isinstance(saved, dict):
                raise RunDirError(f"{show_path(work / 'config.json')} is not a run's settings; "
                                  "rerun with --force to start over")
            # the preset is a label (the API defaults it, --members leaves it out); what it
            # chose, members, quantizer and recipe, is compared field by field
            now = {k: v for k, v in cfg.to_json().items() if k != "preset"}
            saved = {k: v for k, v in saved.items() if k != "preset"}
            if saved != now:
                diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise RunDirError(f"--resume: {work} was started with other settings "
                                  f"({', '.join(diff)}); rerun with the same options or --force")
        # else: killed before its config.json was written, so nothing was trained yet and
        # resuming is starting afresh in the same folder
    elif resume:
        raise RunDirError(f"--resume: nothing to resume at {work}; run without --resume")
    return work


def train(cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print) -> dict:
    """Train every member, write the run directory, return its manifest."""
    import torch

    # --threads applies to this run only: a caller's (or a test process's) later work keeps
    # its own thread count, and with it the same floating-point results
    previous_threads = torch.get_num_threads()
    try:
        return _train(cfg, resume=resume, force=force, progress=progress, echo=echo)
    finally:
        torch.set_num_threads(previous_threads)


def _train(cfg: TrainConfig, *, resume: bool, force: bool, progress: bool,
           echo: Callable[[str], None]) -> dict | None:
    from edgempir.distributed import process_group

    with process_group(cfg.distributed) as group:
        return _train_in_group(cfg, group, resume=resume, force=force, progress=progress,
                               echo=echo)


def _make_work(work: Path) -> bool:
    """Create the .partial folder; True when this call created it."""
    created = not work.exists()
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only or full file system: nothing was written
        raise write_error(work, e) from None
    return created


def _train_in_group(cfg: TrainConfig, group, *, resume: bool, force: bool, progress: bool,
                    echo: Callable[[str], None]) -> dict | None:
    """``group``: None in one process; under torchrun, rank 0 checks and creates the run
    folder and writes the manifest, and every rank trains (edgempir.distributed)."""
    import torch

    from edgempir.data import load_dataset
    from edgempir.distributed import decided_by_leader

    leader = group is None or group.leader
    work = decided_by_leader(group, lambda: _check_out(cfg, resume, force))
    if work == Path(cfg.out):
        if not leader:
            return None
        echo(f"{cfg.out} is already complete; nothing to resume")
        return rundir.read_manifest(work)
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.image_size)
    for spec in cfg.members:  # a bad --arch or an arch that does not fit the data fails here
        rundir.build_model_for(cfg.arch, spec, data, cfg.quantizer)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    created = decided_by_leader(group, lambda: _make_work(work))
    try:
        return _train_members(cfg, work, data, progress and leader, echo, group)
    except TrainingError as e:
        if created and leader:  # nothing worth resuming: leave no .partial to block the rerun
            shutil.rmtree(work, ignore_errors=True)
            raise TrainingError(f"{e}; nothing was kept") from None
        raise TrainingError(f"{e}; the epochs finished before are kept in "
                            f"{show_path(work)} (--resume continues them with the old "
                            "settings, --force starts over)") from None
    except EdgempirError:
        # e.g. a full disk before the first epoch was saved: a .partial without weights
        # would only make the rerun ask for --resume or --force
        if created and leader and not any(work.rglob("*.safetensors")):
            shutil.rmtree(work, ignore_errors=True)
        raise


def _member_log(work: Path, progress: bool, echo: Callable[[str], None]) -> Callable[[str], None]:
    log_path = work / "train.log"

    def log(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}"
        with open(log_path, "a") as f:
            f.write(line + "\n")
        if progress:
            echo(msg)
    return log


def _no_log(msg: str) -> None:
    pass


def trained_member(cfg: TrainConfig, work: Path, data, i: int, progress: bool,
                   log: Callable[[str], None], group=None):
    """Member ``i``'s final weights: loaded when an earlier (killed) train finished it,
    else trained and saved; (model, history)."""
    spec = cfg.members[i]
    final = rundir.member_weights_path(work, i, spec)
    if final.is_file():
        model = rundir.build_model_for(cfg.arch, spec, data, cfg.quantizer)
        state, meta = rundir.load_weights(final)
        history = _load_saved(final, model, state, meta)
        return model.eval(), history
    model, history = train_member(cfg, data, work, Member(i, spec), log, progress, group)
    ddp = _ddp_group(cfg, group)
    if ddp is None or ddp.leader:
        rundir.save_weights(final, model.state_dict(), {"history": json.dumps(history),
                                                        "spec": spec.name})
    if ddp is not None:
        ddp.barrier()
    return model, history


def _train_members(cfg: TrainConfig, work: Path, data, progress: bool,
                   echo: Callable[[str], None], group=None) -> dict | None:
    """Train every member (strategy members: this rank's share), then, on rank 0 once
    every rank is done, load them all, write the manifest and publish the run."""
    import torch

    if not (work / "config.json").is_file():
        atomic_write_json(work / "config.json", cfg.to_json())
    log = _member_log(work, progress, echo)
    if _ddp_group(cfg, group) is not None and not group.leader:
        log = _no_log  # every rank computes the same epoch figures: rank 0 writes them
    log(f"training {len(cfg.members)} members {[m.name for m in cfg.members]} on {data.name} "
        f"({len(data.y_train)} train / {len(data.y_test)} test images, arch {cfg.arch}, "
        f"{torch.get_num_threads()} threads)")
    if data.folder is not None and data.folder["skipped_count"]:
        first = data.folder["skipped"][0]
        log(f"{data.folder['skipped_count']} file(s) of {data.source} skipped, not readable "
            f"images (the manifest lists them), e.g. {first['path']}: {first['reason']}")
    if group is not None:
        for i in range(len(cfg.members)):
            if cfg.distributed == "ddp" or group.owns_member(i):
                trained_member(cfg, work, data, i, progress, log, group)
        group.barrier()  # every member's final weights are on disk
        if not group.leader:
            return None
    members_meta, logits, histories = [], [], []
    for i, spec in enumerate(cfg.members):
        model, history = trained_member(cfg, work, data, i, progress, log, group)
        member_logits, y = predict_test_split(model, data, cfg.workers)
        histories.append(history)
        logits.append(member_logits)
        members_meta.append({
            "index": i, "spec": spec.name, **spec.to_json(),
            "file": str(rundir.member_weights_path(work, i, spec).relative_to(work)),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "clean_accuracy": float((member_logits.argmax(1) == y).float().mean()),
            "time_per_epoch_s": [h["seconds"] for h in history],
            "history": history,
        })
    manifest = _manifest(cfg, data, members_meta, torch.stack(logits), y)
    atomic_write_json(work / rundir.MANIFEST, manifest)
    _publish(work, Path(cfg.out))
    return manifest


def _dataset_record(data) -> dict:
    from edgempir.data import data_fingerprint

    record = {"name": data.name, "source": data.source, "fingerprint": data_fingerprint(data),
              "input_shape": list(data.input_shape), "input_range": [0.0, 1.0],
              "num_classes": data.num_classes, "class_names": list(data.class_names),
              "n_train": len(data.y_train), "n_test": len(data.y_test)}
    if data.folder is not None:
        record["folder"] = data.folder
    return record


def _skipped_in_training(members_meta: list[dict]) -> list[dict]:
    """Images that passed the header scan but did not decode, from the members' histories."""
    seen: dict[str, dict] = {}
    for m in members_meta:
        for h in m["history"]:
            for s in h.get("skipped", []):
                seen.setdefault(s["path"], s)
    return [seen[p] for p in sorted(seen)]


def _manifest(cfg: TrainConfig, data, members_meta: list[dict], stacked, y) -> dict:
    import torch

    from edgempir.ensemble import combine

    ref = reference_index(cfg.members)
    ensemble_acc = {c: float((combine(stacked, c, ref).argmax(1) == y).float().mean())
                    for c in ("vote", "mean-softmax", "mean-logits")}
    dataset = _dataset_record(data)
    if data.folder is not None:
        dataset["folder"] = {**data.folder,
                             "skipped_in_training": _skipped_in_training(members_meta)}
    return {
        "schema": rundir.SCHEMA, "schema_version": rundir.SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": dataset,
        "arch": cfg.arch,
        "preset": cfg.preset,
        "quantizer": cfg.quantizer,
        "members": members_meta,
        "combiner": cfg.combiner,
        "reference_member": ref,
        "seed": cfg.seed,
        "training": {"optimizer": "adam", "lr": cfg.lr, "schedule": cfg.schedule,
                     "label_smoothing": cfg.label_smoothing,
                     "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                     "augment": cfg.augment, "threads": torch.get_num_threads(),
                     "distributed": _distributed_record(cfg),
                     "adversarial": None if cfg.adv_train == "none" else {
                         "method": cfg.adv_train, "norm": "Linf",
                         "eps": cfg.adv_eps if cfg.adv_eps is not None else DEFAULT_EPS[cfg.dataset],
                         "steps": cfg.adv_steps, "step_size": cfg.adv_step_size,
                         "trades_beta": cfg.trades_beta if cfg.adv_train == "trades" else None}},
        "metrics": {"clean_accuracy": {"members": [m["clean_accuracy"] for m in members_meta],
                                       "ensemble": ensemble_acc},
                    "n_test": len(y)},
        "versions": versions(),
    }


def _distributed_record(cfg: TrainConfig) -> dict | None:
    if cfg.distributed == "none":
        return None
    import torch.distributed as dist

    return {"strategy": cfg.distributed, "world_size": dist.get_world_size(),
            "backend": dist.get_backend()}


def _publish(work: Path, out: Path) -> None:
    if out.exists():  # --force: swap only now that the new run is complete, in one step
        swap_in(work, out)
    else:
        os.replace(work, out)
    fsync_dir(out.parent)
