"""The ``edgefg train`` command (a thin layer over :func:`edgefg.train.api.train_classifier`)."""
from __future__ import annotations

from pathlib import Path

import click

from edgefg.cli_support import console, handle_errors
from edgefg.train.api import MODES, TrainOptions


@click.command("train")
@click.argument("backbone", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training images: one sub-folder per class (ImageFolder); the folder names become the labels.")
@click.option("--val-data", type=click.Path(path_type=Path), help="Labelled images to report top-1/top-5 and per-class accuracy on (same class folder names).")
@click.option("--mode", type=click.Choice(MODES), default="linear", show_default=True,
              help="linear: fit a new head on the frozen backbone's features (minutes on a CPU); finetune: that head, then every layer for --epochs.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="finetune: epochs over --data (augmented).")
@click.option("--lr", default=3e-4, show_default=True, type=click.FloatRange(0, min_open=True), help="finetune: AdamW learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of each class's training images that choose the head's L2 strength (then refitted on all).")
@click.option("--device", default="cpu", show_default=True, help="finetune: cpu, cuda or cuda:N.")
@click.option("--train-bn", is_flag=True, help="finetune: let BatchNorm re-estimate its statistics from each batch (large batches, real BatchNorm). "
              "Default: BN keeps its running statistics (a BN-folded backbone, e.g. converted from TFLite, falls to chance otherwise).")
@click.option("--threads", type=click.IntRange(1, 1024), help="PyTorch threads (default: all cores).")
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Hub folder to write (config.json + model.safetensors + train.json/train.md).")
@click.option("--force", is_flag=True, help="Overwrite the output folder.")
@handle_errors
def train_cmd(backbone, data, val_data, mode, epochs, lr, batch_size, holdout, device, train_bn, threads, seed, out, force) -> None:
    """Train a classifier for the classes of --data from BACKBONE (a timm hub folder) and write a hub
    folder that `edgefg compress` takes.

    \b
    edgefg train backbone/ --data train/ --val-data test/ -o my-model
    edgefg train backbone/ --data train/ --mode finetune --epochs 5 --device cuda -o my-model
    """
    from edgefg.models.loader import load_model
    from edgefg.train.api import train_classifier

    loaded = load_model(backbone)
    opts = TrainOptions(mode=mode, epochs=epochs, lr=lr, batch_size=batch_size, holdout=holdout, device=device, threads=threads, seed=seed, force=force,
                        train_bn=train_bn)
    report = train_classifier(loaded, data, out, val_data=val_data, opts=opts)
    c = console()
    lp = report["linear_probe"]
    wd = f"{lp['weight_decay']:g}"
    line = f"[green]wrote[/] {out}  ({report['classes']} classes, {report['train_images']} images; head L2 {wd}, hold-out top-1 {lp['holdout_top1'][wd]:.3f}"
    if "val" in report:
        line += f"; val top-1 {report['val']['top1']:.4f}, top-5 {report['val']['top5']:.4f}"
    c.print(line + f"; report: {out / 'train.md'})")
    c.print(f"next: edgefg compress {out} --data {data} --recipe int8 -o {out.name}-int8")
