"""``edgefg tune`` (click only; the work is in :mod:`edgefg.tune.api`)."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from edgefg.cli_support import console as _console
from edgefg.cli_support import handle_errors, run_printing_report
from edgefg.compress.cli_options import checkpoint_options


@click.command("tune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training/calibration images (ImageFolder).")
@click.option("--val-data", required=True, type=click.Path(path_type=Path), help="Held-out labelled images: per-class validation against the FP32 reference.")
@click.option("--target", "-t", "targets", multiple=True, required=True, help="Target profile (repeatable).")
@click.option("--space", default="builtin", show_default=True, help="builtin (by model family: CNN or ViT) or a .toml file with a [space] table.")
@click.option("--max-latency-ms", type=float, help="Budget: p50 latency at batch 1.")
@click.option("--max-size-mb", type=float, help="Budget: bundle size.")
@click.option("--max-drop", type=float, help="Budget: top-1 drop vs FP32 in points (default: the target profile's).")
@click.option("--max-class-drop", type=float, help="Budget: per-class drop in points (default: the target profile's); a class fails only when "
              "its drop is over this AND significant (paired sign test, Holm-corrected), see --class-gate.")
@click.option("--class-alpha", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Significance level of the per-class test (family-wise, over the classes).")
@click.option("--class-gate", type=click.Choice(["evidence", "points"]), default="evidence", show_default=True,
              help="evidence: over --max-class-drop AND significant; points: every drop over it fails (one image can decide).")
@click.option("--objective", type=click.Choice(["latency", "size", "accuracy"]), default="latency", show_default=True,
              help="What 'best within budget' means: the fastest, the smallest, or the most accurate trial inside every budget.")
@click.option("--agreement-data", type=click.Path(path_type=Path),
              help="Unlabelled frames (any folder, searched recursively) the model was NOT trained on, e.g. from the user's cameras: every "
                   "trial is also scored by top-1 agreement with FP32 on them (training images say little: the model fits them, so compression rarely flips them).")
@click.option("--min-agreement", type=click.FloatRange(0, 1, min_open=True), help="Budget: top-1 agreement with FP32 on --agreement-data.")
@click.option("--no-early-stop", is_flag=True, help="Train every pruning trial's distillation to its last epoch (default: stop one that cannot "
              "reach the loosest target's --max-drop even at its last epoch's rate of improvement).")
@click.option("--agreement-size", type=click.IntRange(1), default=2000, show_default=True, help="Frames read from --agreement-data (a seeded random subset).")
@click.option("--trials", type=int, help="Run N configurations of the space (the baseline + a seeded pick); default: all.")
@click.option("--ray", "ray_address", help="Run on Ray: 'local' starts one on this machine; HOST:PORT joins a cluster. Default: in-process.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in TUNE_DIR.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="TUNE_DIR to write.")
@click.option("--val-size", type=int, help="Validate on a stratified subset of N images (default: all).")
@click.option("--train-max-steps", type=int, help="Cap optimizer steps of each training step (quick sweeps).")
@click.option("--bench-iters", default=20, show_default=True, help="Timed inferences per round (3 rounds).")
@click.option("--seed", default=0, show_default=True)
@click.option("--arch", help="Bare checkpoint (.safetensors/.pth): its timm architecture (or from --config).")
@click.option("--num-classes", type=click.IntRange(1), help="Bare checkpoint: number of classes (or from --config / --labels).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file.")
@functools.partial(checkpoint_options, crop=True)  # the same bare-checkpoint options as compress: refused when unknown, never guessed
@handle_errors
def tune_cmd(model, data, val_data, targets, space, max_latency_ms, max_size_mb, max_drop, max_class_drop, class_alpha, class_gate, objective,
             agreement_data, min_agreement, no_early_stop, agreement_size, trials, ray_address, resume, out, val_size, train_max_steps, bench_iters, seed, arch,
             num_classes, labels, **checkpoint) -> None:
    """Pick each target's configuration (precision, pruning, resolution, tokens): by default the fastest one within its budget.

    \b
    edgefg tune M --data train/ --val-data test/ --target intel-cpu --target rpi5 --max-latency-ms 20 -o tune
    edgefg tune M --data train/ --val-data test/ --target jetson-orin-nano --ray HEAD:6379 -o tune
    """
    from edgefg.compress.cli_options import checkpoint_settings
    from edgefg.tune.api import tune
    from edgefg.tune.options import Budget, TuneOptions

    opts = TuneOptions(model=model, data=data, val_data=val_data, targets=list(targets), out=out, space=space, objective=objective,
                       agreement_data=agreement_data, agreement_size=agreement_size, early_stop=not no_early_stop,
                       budget=Budget(max_latency_ms, max_size_mb, max_drop, max_class_drop, min_agreement, class_alpha, class_gate),
                       trials=trials, ray=ray_address,
                       resume=resume, seed=seed, val_size=val_size, train_max_steps=train_max_steps, bench_iters=bench_iters,
                       arch=arch, num_classes=num_classes, labels=labels, checkpoint=checkpoint_settings(**checkpoint))
    console = _console()
    run_printing_report(lambda: tune(opts), out / "tune.md", console)
    console.print(f"[green]wrote[/] {out / 'tune.json'}; best bundles in {out / 'best'}")
