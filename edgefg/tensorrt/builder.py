"""Build a TensorRT engine from a bundle's ONNX with the TensorRT Python API (on the device).

Written against TensorRT 10 (JetPack 6) with the differences of 8.x kept: an explicit-batch network
flag (required on 8.x, the default on 10), ``set_memory_pool_limit`` (8.4+) vs ``max_workspace_size``
(8.2, Jetson Nano). INT8 is explicit quantization: the Q/DQ in the ONNX carry the scales, the INT8
flag only lets TensorRT pick int8 kernels; no calibrator.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgefg.errors import MissingDependencyError, ModelLoadError, TargetError
from edgefg.manifest import Manifest, load_manifest
from edgefg.tensorrt.cache import (
    DeviceInfo,
    EngineCache,
    EngineKey,
    check_build_request,
    detect_device,
    engine_dir,
    engine_key,
)

log = logging.getLogger(__name__)
TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack puts it


@dataclass
class BuildOptions:
    precision: str
    fp16: bool
    int8: bool
    workspace_mb: int
    dla_core: int | None = None
    batch: int | None = None
    verbose: bool = False


def build_options(
    manifest: Manifest,
    workspace_mb: int | None = None,
    dla_core: int | None = None,
    fp16: bool | None = None,
    int8: bool | None = None,
) -> BuildOptions:
    """The manifest's build settings, with the user's overrides checked against the bundle."""
    if manifest.backend != "tensorrt":
        raise TargetError(
            f"'{manifest.name}' is a {manifest.backend} bundle, not a TensorRT one",
            "deploy for a Jetson target first: edgefg deploy ART --target jetson -o BUNDLE",
        )
    check_build_request(manifest, dla_core, fp16, int8)
    build = manifest.backend_options.get("engine", {})
    ws = int(workspace_mb or build.get("workspace_mb") or 1024)
    if ws < 16:
        raise TargetError(f"--workspace-mb {ws} is too small for any engine", "use at least 64")
    return BuildOptions(
        precision=manifest.precision,
        fp16=bool(build.get("fp16", manifest.precision in ("fp16", "int8")) if fp16 is None else fp16),
        int8=bool(build.get("int8", manifest.precision == "int8") if int8 is None else int8),
        workspace_mb=ws,
        dla_core=dla_core,
        batch=build.get("batch"),
    )


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "the TensorRT Python bindings ('tensorrt') are not importable in this Python",
            "on a Jetson use JetPack's: python3 -m venv --system-site-packages venv (they are not on PyPI for Jetson); "
            "on an x86 host install NVIDIA's tensorrt wheel",
        ) from None
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt: Any) -> int:
    """Explicit batch: a flag on TensorRT 8.x, always on (flag deprecated) on 10+."""
    if trt_major(trt) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def configure(trt: Any, builder: Any, config: Any, opts: BuildOptions, timing_cache: bytes | None) -> Any:
    """Apply ``opts`` to a builder config; returns the timing cache object attached to it."""
    workspace = int(opts.workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT 8.2 (JetPack 4)
        config.max_workspace_size = workspace
    if opts.fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; TensorRT may still pick FP32 kernels")
        config.set_flag(trt.BuilderFlag.FP16)
    if opts.int8:
        if not builder.platform_has_fast_int8:
            raise TargetError("this GPU has no INT8 support in TensorRT (e.g. Jetson Nano)", "deploy with --precision fp16")
        config.set_flag(trt.BuilderFlag.INT8)
    if opts.dla_core is not None:
        if opts.dla_core >= int(builder.num_DLA_cores):
            raise TargetError(f"DLA core {opts.dla_core} requested but this device has {builder.num_DLA_cores}", "omit --dla")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a cache from another GPU is rejected
    return cache


def parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = ""
            if hasattr(err, "node_name"):  # TensorRT >= 8.6
                node = f" at node '{err.node_name()}' ({err.node_operator()})"
            elif hasattr(err, "node"):
                node = f" at node #{err.node()}"
            errors.append(f"{err.desc()}{node}")
        raise ModelLoadError(
            f"TensorRT {trt.__version__} cannot parse '{onnx_path.name}': " + "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""),
            "re-deploy the bundle for this device's target profile (its lint matches the profile's TensorRT version)",
        )
    return parser


def add_static_profile(trt: Any, builder: Any, network: Any, config: Any, batch: int) -> bool:
    """A one-shape optimization profile when the ONNX still has a dynamic batch (builds on hosts)."""
    dynamic = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if any(int(d) < 0 for d in t.shape):
            dynamic.append(t)
    if not dynamic:
        return False
    profile = builder.create_optimization_profile()
    for t in dynamic:
        dims = [batch if int(d) < 0 and j == 0 else int(d) for j, d in enumerate(t.shape)]
        if any(d < 0 for d in dims):
            raise TargetError(f"input '{t.name}' has dynamic non-batch dimensions {tuple(t.shape)}", "export the model with a fixed input size")
        profile.set_shape(t.name, dims, dims, dims)
    config.add_optimization_profile(profile)
    return True


@dataclass
class BuildResult:
    engine: Path
    key: EngineKey
    device: DeviceInfo
    seconds: float
    reused: bool
    trtexec: str


def trtexec_command(onnx_path: Path, engine_path: Path, opts: BuildOptions, trt_version: str, timing_cache: Path | None = None) -> str:
    """The equivalent trtexec command line (what NVIDIA's tool would do with the same settings)."""
    major_minor = tuple(int(p) for p in trt_version.split(".")[:2])
    parts = [TRTEXEC, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if major_minor >= (8, 4):
        parts.append(f"--memPoolSize=workspace:{opts.workspace_mb}")  # MiB
    else:
        parts.append(f"--workspace={opts.workspace_mb}")
    if opts.fp16:
        parts.append("--fp16")
    if opts.int8:
        parts.append("--int8")  # the scales come from the Q/DQ nodes: no --calib
    if opts.dla_core is not None:
        parts += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


def build_engine(
    bundle: str | Path,
    opts: BuildOptions | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    trt: Any = None,
    cuda_device: Any = None,
    manifest: Manifest | None = None,
) -> BuildResult:
    """Build (or reuse) the engine of ``bundle`` for this device and store it in the engine cache."""
    bundle = Path(bundle)
    manifest = manifest or load_manifest(bundle)
    opts = opts or build_options(manifest)
    trt = trt or import_tensorrt()
    if cuda_device is None:
        from edgefg.runtime.backends.tensorrt import cuda_device as _cuda_device

        cuda_device = _cuda_device(0)
    device = detect_device(trt, cuda_device)
    key = engine_key(manifest, device, opts.dla_core)
    cache = EngineCache(engine_dir(bundle, manifest, cache_dir))
    engine_path, _ = cache.paths(key)
    timing_path = cache.timing_cache_path(device)
    onnx_path = bundle / manifest.model_file
    cmd = trtexec_command(onnx_path, engine_path, opts, device.tensorrt, timing_path)
    if cache.has(key) and not force:
        return BuildResult(engine_path, key, device, 0.0, True, cmd)

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    configure(trt, builder, config, opts, timing)
    add_static_profile(trt, builder, network, config, opts.batch or 1)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(
            f"TensorRT {trt.__version__} could not build an engine from '{onnx_path.name}' (see the TensorRT log above)",
            "try a larger --workspace-mb, drop --dla, or rebuild with -v for the verbose TensorRT log",
        )
    cache.directory.mkdir(parents=True, exist_ok=True)
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    build_info = {**asdict(opts), "gpu": device.gpu_name, "seconds": round(seconds, 2), "trtexec_equivalent": cmd}
    path = cache.store(key, bytes(serialized), build_info)
    del parser
    return BuildResult(path, key, device, seconds, False, cmd)
