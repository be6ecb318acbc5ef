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


# Commands that live in their own modules: name -> "module:function". Imported only when used, so a
# device without that part's dependencies still runs the rest. Adding a command = one line here.
LAZY_COMMANDS: dict[str, str] = {
    "build-engine": "edgefg.tensorrt.cli:build_engine_cmd",
    "compare": "edgefg.validate.compare_cli:compare_cmd",
    "tune": "edgefg.tune.cli:tune_cmd",
    "worker": "edgefg.distributed.worker:worker_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports LAZY_COMMANDS on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    edgefg tune M --data D --val-data V -t T -o O  best configuration per target under a budget
    """
    _setup_logging(verbose)


# --------------------------------------------------------------------------------------------
from edgefg.compress.cli_options import compress_options  # noqa: E402  (click only)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Calibration images (ImageFolder: one sub-folder per class).")
@click.option("--val-data", type=click.Path(path_type=Path), help="Labelled images for the before/after report (default: --data).")
@click.option("--recipe", default="int8", show_default=True, help="Built-in recipe (fp32, int8, int8-accuracy, prune-kd, prune-kd-int8, evit, tome, ila) or a .toml/.yaml recipe file.")
@click.option("--calib-size", default=300, show_default=True, help="Calibration images, stratified over classes.")
@click.option("--arch", help="timm architecture, for a bare checkpoint (.safetensors/.pth).")
@click.option("--num-classes", type=int, help="Number of classes, for a bare checkpoint.")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file (one class name per line).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@click.option("--seed", default=0, show_default=True)
@compress_options
@handle_errors
def compress(model, data, val_data, recipe, calib_size, arch, num_classes, labels, out, force, seed, **extra) -> None:
    """Compress MODEL (timm hub folder, checkpoint + --arch, or .onnx) into an artifact.

    \b
    edgefg compress M --data train/ --val-data test/ --max-drop 0.5 --max-class-drop 10 -o art
    edgefg compress M --data train/ --val-data test/ --prune 0.3 --epochs 2 -o art
    edgefg compress VIT --data train/ --recipe fp32 --token-keep 0.5 --token-method tome -o art
    edgefg compress VIT --data train/ --recipe fp32 --adapters ila --adapter-at 3,7 --epochs 5 -o art
    """
    from edgefg.compress.api import compress as run_compress
    from edgefg.compress.cli_options import options_from_cli
    from edgefg.errors import CheckFailed
    from edgefg.models.loader import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, labels=labels)
    opts = options_from_cli(recipe=recipe, data=data, val_data=val_data, calib_size=calib_size, seed=seed, force=force, **extra)
    console = _console()
    try:
        run_compress(loaded, out, opts)
    except CheckFailed:
        if (out / "report.md").is_file():
            console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)
        raise
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"[green]wrote[/] {out}  (report: {out / 'report.md'})")
    console.print(f"next: edgefg deploy {out} --target intel-cpu -o {out.name}-intel-cpu")


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target profile name (see `edgefg targets`) or a .toml file.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), help="Default: the artifact's precision.")
@click.option("--data", type=click.Path(path_type=Path), help="Images for the parity check (default: the artifact's samples).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file, when ARTIFACT is an already-converted model file.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@click.option("--calib-size", type=int, default=300, show_default=True, help="Images from --data for converters that calibrate (TFLite INT8).")
@click.option("--embed-preprocess", is_flag=True, help="OpenVINO: put normalisation, BGR→RGB and NHWC→NCHW in the IR (PrePostProcessor); the model then takes uint8 pixels.")
@click.option("--mean", type=float, nargs=3, help="Wrapped model file: input mean on 0-1 pixels (default: config.json, or raw pixels for uint8/int8 inputs).")
@click.option("--std", type=float, nargs=3, help="Wrapped model file: input std on 0-1 pixels.")
@click.option("--input-size", type=int, nargs=2, help="Wrapped model file with a dynamic input size: H W.")
@click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest", "area"]), help="Wrapped model file: resize interpolation.")
@click.option("--crop-pct", type=float, help="Wrapped model file: centre-crop fraction (1.0 = resize only).")
@click.option("--output-activation", type=click.Choice(["logits", "softmax"]), help="Wrapped model file: what the output holds (default: read from the graph).")
@handle_errors
def deploy(artifact, target, precision, data, labels, out, force, calib_size, embed_preprocess, mean, std, input_size, interpolation, crop_pct, output_activation) -> None:
    """Convert ARTIFACT (from compress, or a .tflite/.onnx/.xml model) for a target device."""
    from edgefg.deploy import deploy as run_deploy

    wrap = {"mean": mean, "std": std, "input_size": input_size, "interpolation": interpolation, "crop_pct": crop_pct,
            "output_activation": output_activation}
    result = run_deploy(artifact, target, out, precision=precision, force=force, data=data, labels=labels, calib_size=calib_size,
                        wrap_options={k: v for k, v in wrap.items() if v}, options={"embed_preprocess": True} if embed_preprocess else None)
    m, p = result.manifest, result.manifest.parity
    console = _console()
    if target not in (result.target.name, result.target.path):
        rt = result.target.runtime
        versions = ", ".join(f"{k} {rt[k]}" for k in ("jetpack", "tensorrt", "openvino", "litert") if k in rt)
        console.print(f"target '{target}' → profile [bold]{result.target.name}[/] ({result.target.description}{'; ' + versions if versions else ''})")
    if "cosine_min" not in p:  # a wrapped model file: nothing to compare with
        console.print(f"[green]bundle[/] {out}: wrapped {m.format} {m.precision} for {m.target} ({m.backend}); {p.get('note', '')}")
    else:
        console.print(
            f"[green]bundle[/] {out}: {m.format} {m.precision} for {m.target} ({m.backend})\n"
            f"parity vs artifact on {p['samples']} images ({p['inputs']}): cosine min {p['cosine_min']:.6f}, "
            f"max abs {p['max_abs']:.3g}, top-1 agreement {p['top1_agreement']:.4f}"
        )
    for note in (m.compression[-1].get("notes") or []) if m.compression else []:
        console.print(f"note: {note}", markup=False, highlight=False)
    if m.backend == "tensorrt":
        console.print(f"parity measured with {p.get('candidate_runtime', 'onnxruntime')}; the engine is built on the device.")
        console.print(f"next (on the device): edgefg build-engine {out}   then   edgefg run {out} --source 0")
    else:
        ref = "" if "cosine_min" not in p else " --reference REF_ARTIFACT"
        console.print(f"next: edgefg validate {out} --data DIR{ref}   |   edgefg run {out} --source 0   |   edgefg bench {out}")


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
@click.option("--ray", "ray_address", help="Shard the images over Ray actors: 'local' or a cluster HOST:PORT (pip install 'edgefg[distributed]').")
@click.option("--workers", type=int, help="With --ray: number of actors (default: the cluster's CPUs).")
@click.option("--chunk-images", type=int, default=256, show_default=True, help="With --ray: images per task (rounded to the batch size).")
@handle_errors
def validate(bundle, data, reference, max_top1_drop, max_class_drop, min_top1, min_agreement, max_images, json_out, junit, markdown, ray_address, workers,
             chunk_images) -> None:
    """Check BUNDLE's accuracy on DATA against thresholds (exit 1 when one is exceeded)."""
    from edgefg.validate.api import Thresholds
    from edgefg.validate.api import validate as run_validate
    from edgefg.validate.report import validation_markdown, write_json, write_junit

    thresholds = Thresholds(max_top1_drop, max_class_drop, min_top1, min_agreement)
    scorer = None
    if ray_address:
        from edgefg.distributed.validate import RayScorer

        scorer = RayScorer(ray_address, workers, chunk_images)
    elif workers:
        raise click.UsageError("--workers needs --ray")
    try:
        result = run_validate(bundle, data, reference, thresholds, max_images=max_images, scorer=scorer)
    finally:
        if scorer is not None:
            scorer.close()
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
@cli.command(epilog="\b\nSources: 0 | /dev/video0 (V4L2) | rtsp://user:pw@cam/stream | http://host/stream.mjpg | clip.mp4 | photos/ | 'shots/*.jpg' | gst:PIPELINE\n"
             "Jetson CSI camera (needs an OpenCV built with GStreamer, e.g. JetPack's python3-opencv):\n"
             "  --source 'gst:nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 "
             "! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false'\n"
             "  (edgefg run BUNDLE --print-gst-pipeline prints it for the bundle's target)")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--source", help="Camera index, /dev/videoN, RTSP/HTTP URL, video file, image file/folder/glob, or gst:PIPELINE.")
@click.option("--max-frames", type=int, help="Stop after N frames.")
@click.option("--output", type=click.Path(path_type=Path), help="JSON lines file (default: stdout).")
@click.option("--rotate-mb", type=float, help="Rotate --output when it passes this size (keeps --rotate-keep old files).")
@click.option("--rotate-keep", default=5, show_default=True)
@click.option("--topk", default=3, show_default=True)
@click.option("--threads", type=int, help="Inference threads (default: all cores).")
@click.option("--batch", default=1, show_default=True, help="Micro-batch size.")
@click.option("--batch-wait-ms", default=0.0, show_default=True, help="Wait this long to fill a micro-batch.")
@click.option("--roi", help="Fixed crop x,y,w,h in pixels (or fractions 0-1) before preprocessing.")
@click.option("--smooth", default="none", show_default=True, help="Temporal smoothing: ema:A (A = weight of the newest frame) | majority:N | none.")
@click.option("--min-confidence", default=0.0, show_default=True, help="Report 'unknown' when the top-1 probability is below this.")
@click.option("--min-margin", default=0.0, show_default=True, help="Report 'unknown' when top-1 minus top-2 probability is below this.")
@click.option("--events", is_flag=True, help="Write a line only when the (smoothed) label changes.")
@click.option("--save-video", type=click.Path(path_type=Path), help="Annotated video (.mkv FFV1, .avi MJPG, .mp4 mp4v; no H.264 here).")
@click.option("--http", "http_addr", help="Serve /healthz, /latest, /metrics on HOST:PORT (e.g. 127.0.0.1:8080).")
@click.option("--stats-every", type=float, help="Log throughput/latency/drops as a JSON line every N seconds.")
@click.option("--stall-timeout", default=10.0, show_default=True, help="Seconds without a frame before a live source is reopened.")
@click.option("--max-retries", type=int, help="Give up (exit 2) after N failed reopen attempts in a row (default: retry forever).")
@click.option("--loop", is_flag=True, help="Restart a video file/image folder at its end.")
@click.option("--preprocess-in", type=click.Choice(["auto", "capture", "main"]), default="auto", show_default=True,
              help="Thread that preprocesses: capture (pipelined; auto for files when a core is spare) or main.")
@click.option("--print-gst-pipeline", is_flag=True, help="Print a GStreamer camera pipeline for the bundle's target and exit.")
@handle_errors
def run(bundle, source, max_frames, output, rotate_mb, rotate_keep, topk, threads, batch, batch_wait_ms, roi, smooth, min_confidence,
        min_margin, events, save_video, http_addr, stats_every, stall_timeout, max_retries, loop, preprocess_in, print_gst_pipeline) -> None:
    """Run BUNDLE on a camera, stream, video or images; one JSON line per frame (events: on stderr)."""
    from edgefg.runtime.pipeline import RunOptions, format_summary, run_pipeline

    if print_gst_pipeline:
        from edgefg.runtime.sources import gst_pipeline_for_bundle

        click.echo(gst_pipeline_for_bundle(bundle))
        return
    if not source:
        raise click.UsageError("--source is required (or --print-gst-pipeline)")
    opts = RunOptions(max_frames=max_frames, output=output, topk=topk, num_threads=threads, stall_timeout_s=stall_timeout, max_retries=max_retries,
                      loop=loop, batch=batch, batch_wait_ms=batch_wait_ms, roi=roi, preprocess_in=preprocess_in, smooth=smooth,
                      min_confidence=min_confidence, min_margin=min_margin, events=events, rotate_mb=rotate_mb, rotate_keep=rotate_keep,
                      save_video=save_video, http=http_addr, stats_every_s=stats_every, event_stream=sys.stderr)
    try:
        summary = run_pipeline(bundle, source, opts)
    except EdgefgError as exc:
        if getattr(exc, "summary", None):
            click.echo(format_summary(exc.summary), err=True)
        raise
    click.echo(format_summary(summary), err=True)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--into", required=True, type=click.Path(path_type=Path), help="Device directory holding releases/, current and previous.")
@click.option("--keep", default=3, show_default=True, help="Releases to keep (current and previous always kept).")
@handle_errors
def install(bundle, into, keep) -> None:
    """Verify BUNDLE and make it DIR/current atomically (the old one becomes DIR/previous)."""
    from edgefg.runtime.install import install_bundle

    r = install_bundle(bundle, into, keep=keep)
    if r.unchanged:
        click.echo(f"{r.release.name} is already current in {into}")
        return
    click.echo(f"installed {r.release.name}: {r.current} -> {r.release}" + (f" (previous: {r.previous.name})" if r.previous else ""))
    click.echo("restart the service to load it (e.g. systemctl restart edgefg-camera); undo with: edgefg rollback --into " + str(into))


@cli.command()
@click.option("--into", required=True, type=click.Path(path_type=Path), help="Device directory used with edgefg install.")
@handle_errors
def rollback(into) -> None:
    """Switch DIR/current back to DIR/previous."""
    from edgefg.runtime.install import rollback as do_rollback

    r = do_rollback(into)
    click.echo(f"rolled back: {r.current} -> {r.release}" + (f" (previous: {r.previous.name})" if r.previous else ""))


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


def main() -> None:
    cli(prog_name="edgefg")


if __name__ == "__main__":
    main()
