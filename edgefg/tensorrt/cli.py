"""``edgefg build-engine BUNDLE``: build the TensorRT engine of a Jetson bundle on the device."""
from __future__ import annotations

from pathlib import Path

import click

from edgefg.cli import handle_errors


@click.command("build-engine")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--workspace-mb", type=int, help="Builder workspace limit in MiB (default: from the target profile; small on 4 GB devices).")
@click.option("--dla", "dla_core", type=int, help="Build for this DLA core (Orin NX/AGX, Xavier), GPU fallback for unsupported layers.")
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
    The engine is keyed by TensorRT version + GPU compute capability + JetPack/L4T + model sha256
    + precision: `edgefg run BUNDLE` loads only an engine built for the device it runs on.
    """
    from edgefg.manifest import load_manifest
    from edgefg.tensorrt.builder import build_engine, build_options, trtexec_command
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
        click.echo("trtexec equivalent: " + trtexec_command(bundle / manifest.model_file, out_dir / "ENGINE.engine", opts, trt_version, out_dir / "timing.cache"))
        return
    result = build_engine(bundle, opts, cache_dir=cache_dir, force=force)
    d = result.device
    where = f"TensorRT {d.tensorrt}, {d.gpu_name} (SM {d.compute_capability}), L4T {d.l4t or 'none (not a Jetson)'}"
    if result.reused:
        click.echo(f"engine up to date for this device ({where}): {result.engine}  (--force rebuilds)")
    else:
        click.echo(f"built {result.engine} in {result.seconds:.1f} s ({where})")
    click.echo(f"trtexec equivalent: {result.trtexec}")
    click.echo(f"next: edgefg run {bundle} --source 0   |   edgefg bench {bundle}")
