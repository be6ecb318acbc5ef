"""``edgefg build-engine BUNDLE``: build the TensorRT engine of a Jetson bundle on the device."""
from __future__ import annotations

from pathlib import Path

import click

from edgefg.cli_support import handle_errors


@click.command("build-engine")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--workspace-mb", type=int, help="Builder workspace limit in MiB (default: from the target profile; small on 4 GB devices).")
@click.option("--dla", "dla_core", type=int, help="Build for this DLA core (Orin NX/AGX, Xavier), GPU fallback for unsupported layers (listed after the build).")
@click.option("--fp16/--no-fp16", default=None, help="FP16 kernels (default: per manifest; on for fp16 and int8 bundles).")
@click.option("--int8/--no-int8", default=None, help="INT8 kernels for the Q/DQ layers (default: on for int8 bundles).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Engine cache directory (default: BUNDLE/engines, or $EDGEFG_ENGINE_CACHE).")
@click.option("--force", is_flag=True, help="Rebuild even when an engine for this device exists.")
@click.option("--dry-run", is_flag=True, help="Print the build settings and the trtexec command; build nothing (works without TensorRT).")
@click.option("--verbose-trt", is_flag=True, help="TensorRT's verbose builder log.")
@handle_errors
def build_engine_cmd(bundle, workspace_mb, dla_core, fp16, int8, cache_dir, force, dry_run, verbose_trt) -> None:
    """Build BUNDLE's TensorRT engine for this device (TensorRT Python API) and cache it.

    \b
    The engine is keyed by TensorRT version + GPU (compute capability, Jetson module / GPU name, SM
    count) + CUDA + JetPack/L4T + model sha256 + the precision flags used: `edgefg run BUNDLE` loads
    only an engine built for the device it runs on. The GPU is read through pycuda, cuda-python,
    nvidia-smi or the Jetson device tree, so pycuda is not needed to build. INT8 on a DLA uses the
    bundle's implicit-INT8 form (model.dla.onnx + ranges from the Q/DQ scales).
    """
    from edgefg.manifest import load_manifest
    from edgefg.tensorrt.builder import build_engine, build_options, dla_int8_source, trtexec_command
    from edgefg.tensorrt.cache import engine_dir

    manifest = load_manifest(bundle)
    opts = build_options(manifest, workspace_mb, dla_core, fp16, int8)
    opts.verbose = verbose_trt
    if dry_run:
        expected = manifest.backend_options.get("expected_device", {})
        trt_version = expected.get("tensorrt", "10.3")
        out_dir = engine_dir(bundle, manifest, cache_dir)
        click.echo(f"bundle {bundle}: {manifest.precision} for {manifest.target} (expects TensorRT {trt_version}, JetPack {expected.get('jetpack', '?')}, SM {expected.get('compute_capability', '?')})")
        click.echo(f"settings: fp16={opts.fp16} int8={opts.int8} workspace={opts.workspace_mb} MiB dla={opts.dla_core} batch={opts.batch}")
        onnx_path, calib = bundle / manifest.model_file, None
        engine_path, timing, known = _planned_engine(bundle, manifest, opts, out_dir)
        if known:
            click.echo(f"engine: {engine_path}")
        else:
            click.echo(f"engine: {out_dir}/<key>.engine — the key is the digest of this device's TensorRT version, GPU, CUDA, L4T, the model's "
                       f"sha256 and the flags, so build-engine names it on the device (no TensorRT here); the trtexec line writes {engine_path.name}")
        if opts.int8 and opts.dla_core is not None:
            onnx_path, _ = dla_int8_source(bundle, manifest)  # refuses a bundle without the implicit-INT8 form
            calib = engine_path.with_suffix(".calib")
            click.echo("DLA INT8: implicit quantization from the Q/DQ scales (the calibration cache is written at build time)")
        click.echo("trtexec equivalent: " + trtexec_command(onnx_path, engine_path, opts, trt_version, timing, calib))
        return
    result = build_engine(bundle, opts, cache_dir=cache_dir, force=force)
    d = result.device
    sms = f", {d.sm_count} SMs" if d.sm_count else ""
    where = (f"TensorRT {d.tensorrt}, {d.gpu_name} (SM {d.compute_capability}{sms}), CUDA {d.cuda or '?'}, "
             f"L4T {d.l4t or 'none (not a Jetson)'}; GPU facts from {d.source}")
    if result.reused:
        click.echo(f"engine up to date for this device ({where}): {result.engine}  (--force rebuilds)")
    else:
        click.echo(f"built {result.engine} in {result.seconds:.1f} s ({where})")
        click.echo(f"quantization: {result.quantization}; timing cache: {result.timing_cache}")
        if opts.dla_core is not None:
            if result.gpu_fallback:
                shown = ", ".join(result.gpu_fallback[:8]) + (f" (+{len(result.gpu_fallback) - 8} more)" if len(result.gpu_fallback) > 8 else "")
                click.echo(f"DLA {opts.dla_core}: {len(result.gpu_fallback)} layer(s) fall back to the GPU: {shown}")
            else:
                click.echo(f"DLA {opts.dla_core}: every layer can run on the DLA")
    click.echo(f"trtexec equivalent: {result.trtexec}")
    click.echo(f"next: edgefg run {bundle} --source 0   |   edgefg bench {bundle}")


def _planned_engine(bundle: Path, manifest, opts, out_dir: Path) -> tuple[Path, Path, bool]:
    """(engine path, timing cache, exact?): the cache's own path when TensorRT and the GPU can be read
    here, else a file named after the bundle and precision (the path a manual trtexec build writes)."""
    from edgefg.tensorrt.builder import import_tensorrt
    from edgefg.tensorrt.cache import EngineCache, detect_device, engine_key

    cache = EngineCache(out_dir)
    try:
        device = detect_device(import_tensorrt())
        engine, _ = cache.paths(engine_key(manifest, device, opts.dla_core, opts.fp16, opts.int8))
        return engine, cache.timing_cache_path(device), True
    except Exception:  # no TensorRT or no GPU here (the usual case on a workstation)
        name = Path(bundle).resolve().name or "model"
        return out_dir / f"{name}-{manifest.precision}.engine", out_dir / "timing.cache", False


@click.command("doctor")
@click.option("--target", "target", default="jetson-orin-nano", show_default=True, help="Jetson target profile to check this device against.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON.")
@click.option("--iterations", type=int, default=50, show_default=True, help="Timed runs of the tiny engine.")
@handle_errors
def doctor_cmd(target, json_out, iterations) -> None:
    """Self-test this device for a Jetson target: JetPack, L4T, TensorRT, CUDA, GPU, DLA, pycuda,
    OpenCV/GStreamer, then build and time a tiny TensorRT engine.

    \b
    Exit code: 0 ready (warnings allowed), 1 a required check failed (the report says which),
    2 bad target. Paste the whole output into an issue.
    """
    from edgefg.outputs import write_json
    from edgefg.tensorrt.doctor import format_report, run_doctor

    report = run_doctor(target, iterations=iterations)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report.to_dict())
    raise SystemExit(report.exit_code)
