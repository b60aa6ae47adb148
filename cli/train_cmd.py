"""``edgempir train``: Brevitas QAT of every member in one command."""
from __future__ import annotations

import click

from edgempir.cli.common import json_option, require_host, seed_option
from edgempir.validate import Finite, batch_type, threads_type

EXAMPLE = """
\b
Examples:
  edgempir train --out runs/fm                       # Fashion-MNIST, edge preset
  edgempir train --dataset mnist --preset paper --out runs/mnist-paper   # the reference's
  edgempir train --bits 2,4,32 --epochs 5 --out runs/fm-2-4-32
  edgempir train --dataset cifar10 --data-dir ~/data/cifar-10-batches-py --arch resnet8
  edgempir train --out runs/fm --resume              # continue after a kill
  edgempir train --adv-train pgd --adv-steps 7 --out runs/fm-at   # PGD-trained members
  edgempir train --dataset folder --data-dir ~/data/signs --image-size 48 --out runs/signs
  torchrun --nproc-per-node 3 -m edgempir.cli train --distributed members --out runs/fm
"""


@click.command(epilog=EXAMPLE)
@click.option("--dataset", type=click.Choice(["fashion-mnist", "mnist", "cifar10", "synthetic",
                                             "folder"]),
              default="fashion-mnist", help="Data set to train on; folder: an ImageFolder "
              "layout (--data-dir with train/ and val/ or test/, one sub-folder per class of "
              "PNG/JPEG/PPM files; GTSRB's crop-box CSVs are applied).")
@click.option("--image-size", type=click.IntRange(8, 1024), default=None,
              help="--dataset folder: side in pixels the images are resized to [default: 32].")
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="--dataset folder: processes decoding images (0: in the main process).")
@click.option("--distributed", type=click.Choice(["none", "members", "ddp"]), default=None,
              help="Under torchrun: members (each rank trains whole members; bit-identical "
                   "to one process) or ddp (DistributedDataParallel on one member at a time) "
                   "[default: members under torchrun, none otherwise]. docs/DISTRIBUTED.md.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              envvar="EDGEMPIR_DATA", show_envvar=True,
              help="Folder with the data set's files [default: the Debian package's folder].")
@click.option("--arch", default=None, help="Architecture: mnist, cifar, resnet8, alexnet, "
              "resnet18; alexnet and resnet18 take a width multiplier (resnet18:0.25) "
              "[default: mnist for (Fashion-)MNIST, cifar for CIFAR-10 and folders, alexnet "
              "for folders under --preset paper].")
@click.option("--members", default=None, help="Member specs, e.g. w2a4,w2a4,fp32.")
@click.option("--bits", default=None, help="Shorthand: 2,4,32 means w2a2,w4a4,fp32.")
@click.option("--preset", "preset_name", type=click.Choice(["edge", "paper"]), default=None,
              help="edge: 8-bit input, learned per-channel scales, 5 epochs cosine [default "
                   "when no --members/--bits]; paper: the EMPIR reference code's DoReFa "
                   "members, networks and recipe (15 epochs MNIST, 6 CIFAR-10, constant lr).")
@click.option("--combiner", type=click.Choice(["vote", "mean-softmax", "mean-logits"]),
              default="vote", help="How the ensemble combines its members.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None,
              help="Epochs per member [default: the preset's: edge 5; paper 15 (MNIST, "
                   "Fashion-MNIST), 6 (CIFAR-10)].")
@click.option("--batch-size", type=batch_type(), default=128)
@click.option("--lr", type=Finite(0, 1, lo_open=True), default=1e-3,
              help="Adam learning rate (edge: cosine decay to 0; paper: constant).")
@click.option("--augment", type=click.Choice(["none", "hflip"]), default=None,
              help="Training augmentation: random horizontal flips [default: edge: hflip for "
                   "cifar10, none otherwise (at 5 epochs flips cost Fashion-MNIST accuracy); "
                   "paper: none].")
@click.option("--adv-train", type=click.Choice(["none", "pgd", "trades"]), default="none",
              help="Adversarial training of every member: Madry PGD or TRADES, through the "
                   "straight-through quantizers.")
@click.option("--adv-eps", type=Finite(0, 1, lo_open=True), default=None,
              help="L-inf budget for --adv-train [default: the data set's eval eps: "
                   "0.3 MNIST, 0.1 Fashion-MNIST, 8/255 CIFAR-10].")
@click.option("--adv-steps", type=click.IntRange(1, 10_000), default=10, help="PGD steps per batch.")
@click.option("--adv-step-size", type=Finite(0, 1, lo_open=True), default=None,
              help="PGD step size [default: 2.5 * eps / steps].")
@click.option("--trades-beta", type=Finite(0, 1000), default=6.0,
              help="TRADES' robustness weight.")
@seed_option
@click.option("--threads", type=threads_type(), default=None,
              help="Torch threads [default: torch's choice].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory to write.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run at --out.")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@json_option
def train(dataset, image_size, workers, distributed, data_dir, arch, members, bits, preset_name, combiner, epochs, batch_size, lr,
          augment, adv_train, adv_eps, adv_steps, adv_step_size, trades_beta, seed, threads, out,
          resume, force, as_json):
    """Train an EMPIR ensemble: one full-precision and low-bit members, one command."""
    require_host("train")
    from edgempir.data import DEFAULT_AUGMENT, DEFAULT_FOLDER_IMAGE_SIZE
    from edgempir.distributed import default_strategy
    from edgempir.errors import DataError
    from edgempir.fsutil import dumps_json
    from edgempir.members import DEFAULT_PRESET, PRESET_QUANTIZER, preset_recipe, resolve_members
    from edgempir.models import default_arch
    from edgempir.report import training_table
    from edgempir.train import TrainConfig
    from edgempir.train import train as run_train

    if image_size is not None and dataset != "folder":
        raise DataError(f"--image-size applies to --dataset folder only, not {dataset}")
    specs = resolve_members(dataset, members, bits, preset_name)
    # --members/--bits train edge-family members; a preset also brings quantizers and recipe
    chosen = preset_name or (None if members or bits else DEFAULT_PRESET)
    recipe = preset_recipe(chosen or DEFAULT_PRESET, dataset)
    cfg = TrainConfig(out=out, dataset=dataset, data_dir=data_dir,
                      arch=arch or default_arch(dataset, chosen), members=specs,
                      epochs=epochs or recipe["epochs"],
                      batch_size=batch_size, lr=lr, seed=seed, combiner=combiner,
                      preset=chosen, quantizer=PRESET_QUANTIZER[chosen or DEFAULT_PRESET],
                      schedule=recipe["schedule"], label_smoothing=recipe["label_smoothing"],
                      threads=threads,
                      augment=augment or recipe.get("augment")
                      or DEFAULT_AUGMENT.get(dataset, "none"),
                      adv_train=adv_train, adv_eps=adv_eps, adv_steps=adv_steps,
                      adv_step_size=adv_step_size, trades_beta=trades_beta,
                      image_size=(image_size or DEFAULT_FOLDER_IMAGE_SIZE)
                      if dataset == "folder" else None,
                      workers=workers, distributed=distributed or default_strategy())
    manifest = run_train(cfg, resume=resume, force=force, progress=not as_json,
                         echo=lambda s: click.echo(s, err=True))
    if manifest is None:  # a rank other than 0 under torchrun: rank 0 reports the run
        return
    if as_json:
        click.echo(dumps_json({"run_dir": out, "manifest": manifest}), nl=False)
    else:
        click.echo(training_table(manifest))
        click.echo(f"run directory: {out}")
command = train
