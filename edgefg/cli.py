"""The ``edgefg`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a check/budget not met, 2 bad input or usage. Heavy libraries are
imported inside the commands, so ``run``, ``bench`` and ``validate`` work without torch.
"""
from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from edgefg import __version__
from edgefg.errors import EdgefgError

log = logging.getLogger("edgefg")
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "nncf", "torch._dynamo", "torch.export")


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_time=False, show_path=False, markup=False)], force=True)
    logging.getLogger("edgefg").setLevel(logging.INFO if verbose == 0 else level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for tables
        console = Console(width=160)
    return console


def handle_errors(fn: Callable) -> Callable:
    """Turn edgefg errors into one-line messages with the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgefgError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for library logs).")
def cli(verbose: int) -> None:
    """Fine-grained classifiers from PyTorch to field cameras.

    \b
    edgefg compress MODEL --data DIR -o ART       INT8 (or fp32) artifact + report
    edgefg deploy ART --target intel-cpu -o BUN   bundle for a device profile
    edgefg validate BUN --data DIR --reference R  accuracy gate (exit 1 on regression)
    edgefg run BUN --source 0                     on-device inference
    edgefg bench BUN1 BUN2                        side-by-side latency
    """
    _setup_logging(verbose)


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Calibration images (ImageFolder: one sub-folder per class).")
@click.option("--val-data", type=click.Path(path_type=Path), help="Labelled images for the before/after report (default: --data).")
@click.option("--recipe", default="int8", show_default=True, help="Built-in recipe: int8 | fp32.")
@click.option("--calib-size", default=300, show_default=True, help="Calibration images, stratified over classes.")
@click.option("--arch", help="timm architecture, for a bare checkpoint (.safetensors/.pth).")
@click.option("--num-classes", type=int, help="Number of classes, for a bare checkpoint.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file (one class name per line).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@click.option("--seed", default=0, show_default=True)
@handle_errors
def compress(model, data, val_data, recipe, calib_size, arch, num_classes, labels, out, force, seed) -> None:
    """Compress MODEL (timm hub folder, checkpoint + --arch, or .onnx) into an artifact."""
    from edgefg.compress.api import CompressOptions
    from edgefg.compress.api import compress as run_compress
    from edgefg.models.loader import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, labels=labels)
    opts = CompressOptions(recipe=recipe, data=data, val_data=val_data, calib_size=calib_size, seed=seed, force=force)
    result = run_compress(loaded, out, opts)
    console = _console()
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"[green]wrote[/] {out}  (report: {out / 'report.md'})")
    console.print(f"next: edgefg deploy {out} --target intel-cpu -o {out.name}-intel-cpu")
    del result


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target profile name (see `edgefg targets`) or a .toml file.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), help="Default: the artifact's precision.")
@click.option("--data", type=click.Path(path_type=Path), help="Images for the parity check (default: the artifact's samples).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file, when ARTIFACT is an already-converted model file.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@handle_errors
def deploy(artifact, target, precision, data, labels, out, force) -> None:
    """Convert ARTIFACT (from compress, or a .tflite/.onnx/.xml model) for a target device."""
    from edgefg.deploy import deploy as run_deploy

    result = run_deploy(artifact, target, out, precision=precision, force=force, data=data, labels=labels)
    m, p = result.manifest, result.manifest.parity
    console = _console()
    console.print(
        f"[green]bundle[/] {out}: {m.format} {m.precision} for {m.target} ({m.backend})\n"
        f"parity vs artifact on {p['samples']} images ({p['inputs']}): cosine min {p['cosine_min']:.6f}, "
        f"max abs {p['max_abs']:.3g}, top-1 agreement {p['top1_agreement']:.4f}"
    )
    console.print(f"next: edgefg validate {out} --data DIR --reference REF_ARTIFACT   |   edgefg run {out} --source 0   |   edgefg bench {out}")


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Labelled ImageFolder, or a flat folder (agreement only).")
@click.option("--reference", type=click.Path(path_type=Path), help="Reference: an artifact/bundle directory, an .onnx, or a PyTorch model.")
@click.option("--max-top1-drop", type=float, help="Fail if top-1 drops more than this many points vs the reference.")
@click.option("--max-class-drop", type=float, help="Fail if any class drops more than this many points.")
@click.option("--min-top1", type=float, help="Fail if top-1 (fraction 0-1) is below this.")
@click.option("--min-agreement", type=float, help="Fail if top-1 agreement with the reference is below this.")
@click.option("--max-images", type=int, help="Use only the first N images.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the full result as JSON.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write the checks as JUnit XML.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown report.")
@handle_errors
def validate(bundle, data, reference, max_top1_drop, max_class_drop, min_top1, min_agreement, max_images, json_out, junit, markdown) -> None:
    """Check BUNDLE's accuracy on DATA against thresholds (exit 1 when one is exceeded)."""
    from edgefg.validate.api import Thresholds
    from edgefg.validate.api import validate as run_validate
    from edgefg.validate.report import validation_markdown, write_json, write_junit

    thresholds = Thresholds(max_top1_drop, max_class_drop, min_top1, min_agreement)
    result = run_validate(bundle, data, reference, thresholds, max_images=max_images)
    if json_out:
        write_json(json_out, result)
    if junit:
        write_junit(junit, result)
    text = validation_markdown(result)
    if markdown:
        Path(markdown).write_text(text, encoding="utf-8")
    _console().print(text, markup=False, highlight=False)
    sys.exit(0 if result["passed"] else 1)


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", required=True, help="Camera index, /dev/videoN, video file, image file, image folder or glob, URL.")
@click.option("--max-frames", type=int, help="Stop after N frames.")
@click.option("--output", type=click.Path(path_type=Path), help="JSON lines file (default: stdout).")
@click.option("--topk", default=3, show_default=True)
@click.option("--threads", type=int, help="Inference threads (default: all cores).")
@handle_errors
def run(bundle, source, max_frames, output, topk, threads) -> None:
    """Run BUNDLE on a camera, video or images; one JSON line per frame."""
    from edgefg.runtime.pipeline import RunOptions, run_pipeline

    summary = run_pipeline(bundle, source, RunOptions(max_frames=max_frames, output=output, topk=topk, num_threads=threads))
    lat = summary["latency_ms"]
    click.echo(
        f"{summary['frames']} frames in {summary['seconds']:.2f} s: {summary['fps']:.1f} FPS, "
        f"latency p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms"
        + (f", {summary['skipped']} unreadable frame(s) skipped" if summary.get("skipped") else ""),
        err=True,
    )


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--rounds", default=5, show_default=True, help="Interleaved rounds (each bundle once per round).")
@click.option("--iters", default=50, show_default=True, help="Timed inferences per bundle per round.")
@click.option("--warmup", default=10, show_default=True)
@click.option("--batch", default=1, show_default=True)
@click.option("--threads", type=int, help="Inference threads for every bundle (default: all cores).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results as JSON.")
@handle_errors
def bench(bundles, rounds, iters, warmup, batch, threads, json_out) -> None:
    """Latency, throughput, peak RSS and size of BUNDLES, side by side in one run."""
    from edgefg.runtime.bench import BenchOptions, bench_table, run_bench

    result = run_bench(list(bundles), BenchOptions(rounds=rounds, iters=iters, warmup=warmup, batch=batch, num_threads=threads))
    _console().print(bench_table(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def targets(as_json: bool) -> None:
    """List target device profiles."""
    from rich.table import Table

    from edgefg.targets import list_targets

    items = list_targets()
    if as_json:
        click.echo(json.dumps([{k: v for k, v in t.__dict__.items() if k != "path"} for t in items], indent=2))
        return
    table = Table(title="edgefg targets")
    for col in ("target", "status", "backend", "format", "precisions", "device runtime", "description"):
        table.add_column(col)
    for t in items:
        status = "[green]available[/]" if t.available else f"[yellow]planned[/]"
        runtime = ", ".join(f"{k} {v}" for k, v in t.runtime.items() if k in ("jetpack", "tensorrt", "openvino", "onnxruntime", "litert"))
        table.add_row(t.name + (f" ({', '.join(t.aliases)})" if t.aliases else ""), status, t.backend, t.format, ",".join(t.precisions), runtime, t.description)
    _console().print(table)


# --------------------------------------------------------------------------------------------
@cli.command()
@click.option("-o", "--output", "out", default=Path("runs/demo"), type=click.Path(path_type=Path), show_default=True)
@handle_errors
def demo(out: Path) -> None:
    """The built-in end-to-end job on the bundled bird classifier and sample photos."""
    from edgefg.demo import run_demo

    run_demo(out)


# Commands that live in their own modules ("module:function"; the module imports only click at top level).
EXTRA_COMMANDS: list[str] = []
for _spec in EXTRA_COMMANDS:
    _module, _name = _spec.split(":")
    cli.add_command(getattr(importlib.import_module(_module), _name))


def main() -> None:
    cli(prog_name="edgefg")


if __name__ == "__main__":
    main()
