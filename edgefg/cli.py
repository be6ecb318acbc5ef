"""The ``edgefg`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 a check/budget not met, 2 bad input or usage. Heavy libraries are
imported inside the commands, so ``run``, ``bench`` and ``validate`` work without torch.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from edgefg import __version__
from edgefg.cli_support import console as _console
from edgefg.cli_support import handle_errors, run_printing_report
from edgefg.errors import EdgefgError
from edgefg.lazy import resolve

log = logging.getLogger("edgefg")
NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch", "torch.onnx", "nncf", "torch._dynamo", "torch.export", "torchao", "absl", "tensorflow",
                 "jax", "litert_torch", "ai_edge_torch", "openvino", "matplotlib", "PIL")
# native logs of TensorFlow/LiteRT (oneDNN and CPU-feature notices), glog users, and torch's own log handlers (ERROR only)
QUIET_NATIVE_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "TORCH_LOGS": "-torch"}


def _setup_logging(verbose: int) -> None:
    """Logs and warnings on stderr (stdout carries results only). Third-party libraries' logs,
    Python warnings and native log lines are silenced unless -vv."""
    import os
    import warnings

    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("edgefg").setLevel(logging.INFO if verbose == 0 else level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)
    if verbose >= 2:
        os.environ["EDGEFG_NATIVE_LOGS"] = "1"  # edgefg.progress.native_logs_silenced lets native logs through
    else:
        for key, value in QUIET_NATIVE_ENV.items():
            os.environ.setdefault(key, value)  # read when those libraries load, which is later (imports are lazy)
        warnings.filterwarnings("ignore")  # torch/timm/nncf deprecation and tracer warnings; edgefg's own notices are log records


# Commands that live in their own modules: name -> "module:function". Imported only when used, so a
# device without that part's dependencies still runs the rest. Adding a command = one line here.
LAZY_COMMANDS: dict[str, str] = {
    "build-engine": "edgefg.tensorrt.cli:build_engine_cmd",
    "collect": "edgefg.runtime.collect_cli:collect_group",
    "compare": "edgefg.validate.compare_cli:compare_cmd",
    "doctor": "edgefg.tensorrt.cli:doctor_cmd",
    "enroll": "edgefg.enroll:enroll_cmd",
    "keygen": "edgefg.trust.cli:keygen_cmd",
    "sign": "edgefg.trust.cli:sign_cmd",
    "verify": "edgefg.trust.cli:verify_cmd",
    "tune": "edgefg.tune.cli:tune_cmd",
    "train": "edgefg.train.cli:train_cmd",
    "worker": "edgefg.distributed.worker:worker_cmd",
}


class LazyGroup(click.Group):
    """A click group that imports LAZY_COMMANDS on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            self.add_command(resolve(LAZY_COMMANDS[name]), name)
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
    edgefg collect export DIR --to labelling/     frames a camera kept, to label
    edgefg bench BUN1 BUN2                        side-by-side latency
    edgefg sign BUN --key K ; edgefg install BUN --into DIR --trust K.pub
    edgefg tune M --data D --val-data V -t T -o O  best configuration per target under a budget
    """
    _setup_logging(verbose)
    try:  # environment settings, range-checked once, before any command uses them
        from edgefg.runtime.engine.image_limits import max_pixels
        from edgefg.runtime.loop.threads import env_threads

        max_pixels()
        env_threads()
    except EdgefgError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)


# --------------------------------------------------------------------------------------------
from edgefg.compress.cli_options import INTERPOLATIONS, CompressCommand, checkpoint_options, compress_options, preprocess_options  # noqa: E402  (click only)
from edgefg.runtime.loop.run_sections import FRACTION, POSITIVE, RUN_CAMERAS, RUN_MQTT, RUN_OPTIONS_SECTIONS, RUN_SECTIONS, THREADS, RunSection  # noqa: E402, F401  (click only; RunSection re-exported)
from edgefg.runtime.outputs.contract import click_options as output_click_options  # noqa: E402  (click + stdlib only)
from edgefg.trust.cli_options import max_pixels_option, trust_option, trust_paths  # noqa: E402  (click only)


@cli.command(cls=CompressCommand)  # the compression steps' own options come from their registry (edgefg/compress/steps.py)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Calibration images (ImageFolder: one sub-folder per class).")
@click.option("--val-data", type=click.Path(path_type=Path), help="Labelled images for the before/after report (default: --data).")
@click.option("--recipe", default="int8", show_default=True, help="Built-in recipe (fp32, int8, int8-accuracy, prune-kd, prune-kd-int8, prune-iterative, evit, tome, ila) or a .toml/.yaml recipe file.")
@click.option("--calib-size", default=300, show_default=True, type=click.IntRange(1), help="Calibration images, stratified over classes.")
@click.option("--arch", help="Bare checkpoint (.safetensors/.pth): its timm architecture (or from --config).")
@click.option("--num-classes", type=click.IntRange(1), help="Bare checkpoint: number of classes (or from --config / --labels).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file (one class name per line).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Artifact directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@click.option("--seed", default=0, show_default=True)
@checkpoint_options
@preprocess_options
@max_pixels_option
@compress_options
@handle_errors
def compress(model, data, val_data, recipe, calib_size, arch, num_classes, labels, out, force, seed, config, mean, std, model_input_size, pad_type,
             timm_defaults, crop_mode, crop_pct, interpolation, resize, **extra) -> None:
    """Compress MODEL (timm hub folder, bare checkpoint, or .onnx) into an artifact.

    A bare checkpoint (weights only) needs what its weights do not say: --config config.json (its timm/HF hub
    config), and/or --arch --num-classes --mean --std --crop-pct --interpolation --model-input-size --pad-type;
    --timm-defaults accepts timm's defaults for the rest. An unknown one is refused, never guessed.

    \b
    edgefg compress M --data train/ --val-data test/ --max-drop 0.5 --max-class-drop 10 -o art
    edgefg compress M --data labelled/ --agreement-data frames/ --min-agreement 0.99 -o art
    edgefg compress M --data train/ --val-data test/ --prune 0.3 --epochs 2 -o art
    edgefg compress VIT --data train/ --recipe fp32 --token-keep 0.5 --token-method tome -o art
    edgefg compress VIT --data train/ --recipe fp32 --adapters ila --adapter-at 3,7 --epochs 5 -o art
    """
    from edgefg.compress.api import compress as run_compress
    from edgefg.compress.cli_options import checkpoint_settings, options_from_cli
    from edgefg.models.loader import is_bare_checkpoint, load_model, override_preprocess

    crop = {"crop_mode": crop_mode, "crop_pct": crop_pct, "interpolation": interpolation}
    bare = is_bare_checkpoint(model)  # its crop settings are the model's own, recorded as given; any other model's are overrides
    settings = checkpoint_settings(config, mean, std, model_input_size, pad_type, timm_defaults, **(crop if bare else {}))
    loaded = override_preprocess(load_model(model, arch=arch, num_classes=num_classes, labels=labels, checkpoint=settings),
                                 resize=resize, **({} if bare else crop))
    opts = options_from_cli(recipe=recipe, data=data, val_data=val_data, calib_size=calib_size, seed=seed, force=force, **extra)
    console = _console()
    run_printing_report(lambda: run_compress(loaded, out, opts), out / "report.md", console)
    console.print(f"[green]wrote[/] {out}  (report: {out / 'report.md'})")
    console.print(f"next: edgefg deploy {out} --target intel-cpu -o {out.name}-intel-cpu")


# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "-t", required=True, help="Target profile name (see `edgefg targets`) or a .toml file.")
@click.option("--engine", help="Another engine the target's device runs (the profile's [engines], e.g. intel-cpu: onnxruntime, tflite); default: its backend.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), help="Default: the artifact's precision.")
@click.option("--data", type=click.Path(path_type=Path), help="Images for the parity check (default: the artifact's samples).")
@click.option("--labels", type=click.Path(path_type=Path), help="Labels file, when ARTIFACT is an already-converted model file.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--force", is_flag=True, help="Overwrite the output directory.")
@click.option("--calib-size", type=click.IntRange(1), default=300, show_default=True, help="Images from --data for converters that calibrate (TFLite INT8).")
@click.option("--embed-preprocess", is_flag=True, help="OpenVINO: put normalisation, BGR→RGB and NHWC→NCHW in the IR (PrePostProcessor); the model then takes uint8 pixels.")
@click.option("--mean", type=float, nargs=3, help="Wrapped model file: input mean on 0-1 pixels (default: config.json, or raw pixels for uint8/int8 inputs).")
@click.option("--std", type=POSITIVE, nargs=3, help="Wrapped model file: input std on 0-1 pixels.")
@click.option("--input-size", type=click.IntRange(1, 8192), nargs=2, help="Wrapped model file with a dynamic input size: H W.")
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS), help="Wrapped model file: resize interpolation.")
@click.option("--crop-pct", type=click.FloatRange(0, 1, min_open=True), help="Wrapped model file: crop fraction (resize to input/crop_pct, then crop; 1.0 = no crop).")
@click.option("--crop-mode", type=click.Choice(["center", "squash", "border"]), help="Wrapped model file: timm eval crop mode.")
@click.option("--resize", type=click.Choice(["pil", "opencv"]), help="Wrapped model file: resizer (default: pil with a timm config.json, else opencv).")
@click.option("--output-activation", type=click.Choice(["logits", "softmax"]), help="Wrapped model file: what the output holds (default: read from the graph).")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), help="Wrapped model file: input layout, when the input shape does not tell.")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path), help="Sign the bundle with this private key (edgefg keygen) when it is written.")
@click.option("--drift-samples", default=500, show_default=True, type=click.IntRange(0),
              help="Images (from --data, stratified; else the artifact's parity images) for the bundle's drift reference profile; 0: none.")
@click.option("--release", type=click.IntRange(0, 2**63 - 1),
              help="The bundle's release number (e.g. a CI build number); default: the deploy time in seconds. "
                   "edgefg install refuses a lower one than the installed bundle's.")
@click.option("--embedding", is_flag=True, help="Also export the classifier's input features as a second output (parity-checked), for edgefg enroll.")
@max_pixels_option
@handle_errors
def deploy(artifact, target, engine, precision, data, labels, out, force, calib_size, embed_preprocess, mean, std, input_size, interpolation, crop_pct,
           crop_mode, resize, output_activation, layout, sign_key, drift_samples, release, embedding=False) -> None:
    """Convert ARTIFACT (from compress, or a .tflite/.onnx/.xml model) for a target device."""
    from edgefg.deploy import deploy as run_deploy

    signer = None
    if sign_key:  # a bad key fails now, not after the conversion
        from edgefg.trust.signing import load_private_key

        signer = load_private_key(sign_key)

    wrap = {"mean": mean, "std": std, "input_size": input_size, "interpolation": interpolation, "crop_pct": crop_pct,
            "crop_mode": crop_mode, "resize": resize, "output_activation": output_activation, "layout": layout}
    if engine:
        from edgefg.targets import load_target

        target_arg = load_target(target).with_engine(engine)
    else:
        target_arg = target
    result = run_deploy(artifact, target_arg, out, precision=precision, force=force, data=data, labels=labels, calib_size=calib_size,
                        wrap_options={k: v for k, v in wrap.items() if v}, options={"embed_preprocess": True} if embed_preprocess else None,
                        drift_samples=drift_samples, release=release, embedding=embedding)
    m, p = result.manifest, result.manifest.parity
    console = _console()
    if signer is not None:
        from edgefg.trust.bundle_signing import sign_bundle

        console.print(f"signed {out} with key {sign_bundle(out, signer)}")
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
@click.option("--max-top1-drop", type=click.FloatRange(0, 100), help="Fail if top-1 drops more than this many points vs the reference.")
@click.option("--max-class-drop", type=click.FloatRange(0, 100), help="Fail if a class drops more than this many points and the drop is significant "
              "(paired sign test, Holm-corrected over the classes, p < --class-alpha); the same rule as compress and tune --max-class-drop.")
@click.option("--class-alpha", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Significance level for --max-class-drop (family-wise, over all classes).")
@click.option("--class-gate", type=click.Choice(["evidence", "points"]), default="evidence", show_default=True,
              help="evidence: a class fails when over --max-class-drop AND significant; points: every drop over it fails (one image can decide).")
@click.option("--min-top1", type=FRACTION, help="Fail if top-1 (fraction 0-1) is below this.")
@click.option("--min-agreement", type=FRACTION, help="Fail if top-1 agreement with the reference is below this.")
@click.option("--max-images", type=click.IntRange(1), help="Use only the first N images.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the full result as JSON.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write the checks as JUnit XML.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown report.")
@click.option("--check-preprocess", is_flag=True, help="Also compare the bundle's input tensors with timm's own eval transform (needs timm).")
@click.option("--check-images", type=click.IntRange(1), default=32, show_default=True, help="Images (stratified) for --check-preprocess.")
@click.option("--ray", "ray_address", help="Shard the images over Ray actors: 'local' or a cluster HOST:PORT (pip install 'edgefg[distributed]').")
@click.option("--workers", type=click.IntRange(1), help="With --ray: number of actors (default: the cluster's CPUs).")
@click.option("--chunk-images", type=click.IntRange(1), default=256, show_default=True, help="With --ray: images per task (rounded to the batch size).")
@click.option("--drift-reference", type=click.Path(path_type=Path), help="Also write the bundle's drift reference profile on DATA to this JSON file "
              "(for edgefg run --drift-reference; DATA may be unlabelled frames from the camera, no --reference needed then).")
@click.option("--stand-in", is_flag=True, help="A bundle whose engine runs only on the device (TensorRT): score its model file in the host "
              "stand-in (ONNX Runtime) and gate on that; every report says it was a stand-in and which engine.")
@trust_option
@max_pixels_option
@handle_errors
def validate(bundle, data, reference, max_top1_drop, max_class_drop, class_alpha, class_gate, min_top1, min_agreement, max_images, json_out, junit, markdown,
             check_preprocess, check_images, ray_address, workers, chunk_images, drift_reference, stand_in, trust) -> None:
    """Check BUNDLE's accuracy on DATA against thresholds (exit 1 when one is exceeded)."""
    from edgefg.outputs import prepare_parent, write_text
    from edgefg.validate.api import Thresholds
    from edgefg.validate.api import validate as run_validate
    from edgefg.validate.report import validation_markdown, write_json, write_junit

    for path in (json_out, junit, markdown, drift_reference):  # a report path that cannot be written fails now, not after scoring
        if path:
            prepare_parent(path)
    thresholds = Thresholds(max_top1_drop, max_class_drop, min_top1, min_agreement, class_alpha, class_gate)
    scorer = None
    if ray_address:
        from edgefg.distributed.validate import RayScorer

        scorer = RayScorer(ray_address, workers, chunk_images)
    elif workers:
        raise click.UsageError("--workers needs --ray")
    try:
        result = run_validate(bundle, data, reference, thresholds, max_images=max_images, check_preprocess=check_images if check_preprocess else 0,
                              trust=trust_paths(trust), scorer=scorer, drift_reference=drift_reference, stand_in=stand_in)
    finally:
        if scorer is not None:
            scorer.close()
    if json_out:
        write_json(json_out, result)
    if junit:
        write_junit(junit, result)
    text = validation_markdown(result)
    if markdown:
        write_text(markdown, text)
    _console().print(text, markup=False, highlight=False)
    sys.exit(0 if result["passed"] else 1)


# --------------------------------------------------------------------------------------------
# -- edgefg run: its options in sections, each declared once (edgefg/runtime/loop/run_sections.py) ---


def run_sections(f):
    """Decorate ``edgefg run`` with every section's options, in order."""
    for section in reversed(RUN_SECTIONS):
        f = section(f)
    return f


@cli.command(epilog="\b\nSources: 0 | /dev/video0 (V4L2) | rtsp://user:pw@cam/stream | http://host/stream.mjpg | clip.mp4 | photos/ | 'shots/*.jpg' | gst:PIPELINE\n"
             "Jetson CSI camera (needs an OpenCV built with GStreamer, e.g. JetPack's python3-opencv):\n"
             "  --source 'gst:nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 "
             "! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false'\n"
             "  (edgefg run BUNDLE --print-gst-pipeline prints it for the bundle's target)")
@click.argument("bundle", type=click.Path(path_type=Path))
@run_sections
@click.option("--print-gst-pipeline", is_flag=True, help="Print a GStreamer camera pipeline for the bundle's target and exit.")
@output_click_options
@trust_option
@max_pixels_option
@handle_errors
def run(bundle, print_gst_pipeline, trust, **values) -> None:
    """Run BUNDLE on one or more cameras, streams, videos or images; one JSON line per frame (events: on stderr)."""
    from edgefg.runtime.capture.cameras import DEFAULT_NAME, load_cameras, parse_source_args
    from edgefg.runtime.outputs.contract import options_from_cli
    from edgefg.runtime.serve import RunOptions, format_summary, run_cameras, run_pipeline

    if print_gst_pipeline:
        from edgefg.runtime.capture.sources import gst_pipeline_for_bundle

        click.echo(gst_pipeline_for_bundle(bundle))
        return
    from edgefg.trust.secrets import read_secret_file, resolve

    sources, source_file, config = RUN_CAMERAS.take(values).values()
    mqtt_values = RUN_MQTT.take(values)
    run_values = {name: value for section in RUN_OPTIONS_SECTIONS for name, value in section.take(values).items()}  # the rest: field outputs
    if sources and source_file:
        raise click.UsageError("give --source or --source-file, not both")
    if source_file:
        sources = (read_secret_file(source_file, "--source-file"),)
    if not sources and not config:
        raise click.UsageError("--source is required (or --source-file, --config, or --print-gst-pipeline)")
    cameras = (load_cameras(config) if config else []) + (parse_source_args(sources) if sources else [])
    for cam in cameras:  # env:VAR / file:PATH sources, masked wherever they are shown
        cam.source = resolve(cam.source, "--source") or cam.source
    if config and sources and any(c.name == DEFAULT_NAME for c in cameras):
        raise EdgefgError("with --config, name every --source: --source NAME=URI")
    # a person trying `--source 0` on a machine without a camera gets an answer in seconds; services retry forever
    single = cameras[0].source if len(cameras) == 1 and cameras[0].name == DEFAULT_NAME else None
    max_retries = run_values["max_retries"]
    camera_on_terminal = max_retries is None and single is not None and _is_camera(single) and _interactive()
    max_retries = INTERACTIVE_CAMERA_RETRIES if camera_on_terminal else None if max_retries is not None and max_retries < 0 else max_retries
    mqtt = None
    if mqtt_values["url"]:
        from edgefg.runtime.outputs.mqtt import MqttOptions

        discovery = mqtt_values.pop("discovery_prefix")
        mqtt = MqttOptions(**mqtt_values, discovery_prefix=None if discovery.lower() == "none" else discovery)
    opts = RunOptions(**{**run_values, "max_retries": max_retries}, trust=trust_paths(trust), mqtt=mqtt, event_stream=sys.stderr,
                      outputs=options_from_cli(values))
    try:
        if single is not None:  # the classic single-source run
            summary = run_pipeline(bundle, single, opts)
        else:
            summary = run_cameras(bundle, cameras, opts)
    except EdgefgError as exc:
        if partial := getattr(exc, "summary", None):
            click.echo(format_summary(partial), err=True)
        if camera_on_terminal and exc.__class__.__name__ == "SourceError" and not (getattr(exc, "summary", None) or {}).get("frames"):
            raise type(exc)(f"no camera at '{single}': it could not be opened ({max_retries} retries, the default on a terminal)",
                            "check `ls /dev/video*` and that nothing else holds the camera; without one, try --source clip.mp4 "
                            "or --source photos/; --max-retries -1 keeps retrying") from None
        raise
    click.echo(format_summary(summary), err=True)


INTERACTIVE_CAMERA_RETRIES = 3


def _is_camera(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/video")


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--into", required=True, type=click.Path(path_type=Path), help="Device directory holding releases/, current and previous.")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1, 1000), help="Releases to keep (current and previous always kept).")
@click.option("--allow-downgrade", is_flag=True, help="Install BUNDLE even when its release number is lower than the installed bundle's.")
@trust_option
@handle_errors
def install(bundle, into, keep, allow_downgrade, trust) -> None:
    """Verify BUNDLE and make it DIR/current atomically (the old one becomes DIR/previous)."""
    from edgefg.runtime.install import install_bundle

    r = install_bundle(bundle, into, keep=keep, trust=trust_paths(trust), allow_downgrade=allow_downgrade)
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
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1, 10000), help="Interleaved rounds (each bundle once per round).")
@click.option("--iters", default=50, show_default=True, type=click.IntRange(1, 1_000_000), help="Timed inferences per bundle per round.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1024))
@click.option("--threads", type=THREADS, help="Inference threads for every bundle (default: all cores, or $EDGEFG_NUM_THREADS).")
@click.option("--data", type=click.Path(path_type=Path),
              help="Labelled ImageFolder: also score every bundle on it (the first is the reference) and name the fastest within --max-drop.")
@click.option("--max-drop", default=1.0, show_default=True, type=click.FloatRange(0), help="With --data: top-1 points a bundle may lose against the first.")
@click.option("--max-images", type=click.IntRange(1), help="With --data: use only the first N images.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write results as JSON.")
@trust_option
@handle_errors
def bench(bundles, rounds, iters, warmup, batch, threads, data, max_drop, max_images, json_out, trust) -> None:
    """Latency, throughput, peak RSS and size of BUNDLES, side by side in one run; with --data, their
    accuracy too and the fastest within tolerance of the first (as yolo benchmark answers)."""
    from edgefg.outputs import prepare_parent, write_json
    from edgefg.runtime.bench import BenchOptions, bench_table, run_bench

    if data is not None and len(bundles) < 2:
        raise click.UsageError("--data compares bundles with the first: give the reference bundle and at least one more")
    if data is not None and not data.is_dir():
        from edgefg.errors import InputPathError

        raise InputPathError(f"--data '{data}' is not a folder", "pass a labelled ImageFolder (one sub-folder of images per class)")
    if json_out:
        prepare_parent(json_out)
    opts = BenchOptions(rounds=rounds, iters=iters, warmup=warmup, batch=batch, num_threads=threads, trust=trust_paths(trust))
    result = run_bench(list(bundles), opts)
    if data is not None:
        from edgefg.validate.compare import compare
        from edgefg.validate.fastest import fastest_line, join_accuracy

        result = join_accuracy(result, compare(list(bundles), data, max_images=max_images), max_drop)
    _console().print(bench_table(result))
    if data is not None:
        click.echo(fastest_line(result))
    if json_out:
        write_json(json_out, result)


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
        status = "[green]available[/]" if t.available else "[yellow]planned[/]"
        runtime = ", ".join(f"{k} {v}" for k, v in t.runtime.items() if k in ("jetpack", "tensorrt", "openvino", "onnxruntime", "litert"))
        backend = t.backend + (f" (also: {', '.join(t.engines)}; --engine)" if t.engines else "")
        table.add_row(t.name + (f" ({', '.join(t.aliases)})" if t.aliases else ""), status, backend, t.format, ",".join(t.precisions), runtime, t.description)
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
