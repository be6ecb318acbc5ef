"""Build a TensorRT engine from a bundle's ONNX with the TensorRT Python API (on the device).

Written against TensorRT 10 (JetPack 6) with the differences of 8.x kept: an explicit-batch network
flag (required on 8.x, the default on 10), ``set_memory_pool_limit`` (8.4+) vs ``max_workspace_size``
(8.2, Jetson Nano). INT8 on the GPU is explicit quantization: the Q/DQ in the ONNX carry the scales, the INT8
flag only lets TensorRT pick int8 kernels; no calibrator. DLA takes only implicit quantization, so an
INT8 DLA build uses the bundle's Q/DQ-stripped ONNX and sets each tensor's dynamic range from the
Q/DQ scales (and writes the same ranges as a calibration cache for ``trtexec --calib``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
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


def configure(trt: Any, builder: Any, config: Any, opts: BuildOptions) -> None:
    """Apply ``opts`` (workspace, precision flags, DLA) to a builder config."""
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


def attach_timing_cache(config: Any, blob: bytes | None) -> str:
    """Give ``config`` a timing cache, seeded from ``blob`` when TensorRT accepts it; returns what happened.

    ``create_timing_cache`` returns None for bytes it cannot read, and ``set_timing_cache`` returns
    False for a cache from another device/TensorRT (``ignore_mismatch=False``; NvInfer.h
    ``IBuilderConfig::setTimingCache``): the stale cache is then dropped for a fresh one, and when
    no cache can be attached the build goes on without one."""
    status = "loaded" if blob else "new"
    for seed in ([blob, b""] if blob else [b""]):
        cache = config.create_timing_cache(seed)
        if cache is None:
            log.warning("TensorRT could not read the saved timing cache; starting a new one")
            status = "discarded (unreadable)"
            continue
        if config.set_timing_cache(cache, False):
            return status
        log.warning("TensorRT rejected the saved timing cache (built by another TensorRT/GPU); starting a new one")
        status = "discarded (other device)"
    return "unavailable"


def save_timing_cache(config: Any, path: Path) -> bool:
    """Write the config's timing cache after a build; False when there is none (never raises for that)."""
    cache = config.get_timing_cache()
    if cache is None:
        return False
    data = cache.serialize()
    if data is None:
        return False
    path.write_bytes(bytes(data))
    return True


def dla_fallback_layers(network: Any, config: Any) -> list[str]:
    """Layers TensorRT says cannot run on the DLA (``IBuilderConfig.can_run_on_DLA``): with
    GPU_FALLBACK they run on the GPU, each boundary costing a DLA↔GPU copy."""
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not config.can_run_on_DLA(layer):
            out.append(f"{layer.name} ({str(layer.type).split('.')[-1]})")
    return out


def apply_dynamic_ranges(network: Any, ranges: dict[str, float]) -> tuple[int, list[str]]:
    """Implicit INT8: ``set_dynamic_range(-amax, amax)`` on every network tensor named in ``ranges``.
    Returns (tensors set, names not found in the network)."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    done = set()
    for t in tensors:
        amax = ranges.get(t.name)
        if amax is not None and t.name not in done:
            if not t.set_dynamic_range(-float(amax), float(amax)):
                raise ModelLoadError(f"TensorRT refused the dynamic range of tensor '{t.name}' (±{amax})", "re-deploy the bundle")
            done.add(t.name)
    return len(done), sorted(set(ranges) - done)


def tensorrt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION: major*1000+minor*100+patch on 8.x, major*10000+minor*100+patch from 10."""
    parts = [int(p) for p in (str(version).split(".") + ["0", "0"])[:3]]
    return parts[0] * (10000 if parts[0] >= 10 else 1000) + parts[1] * 100 + parts[2]


def calibration_cache_text(ranges: dict[str, float], trt_version: str) -> str:
    """The ranges as a TensorRT calibration cache (what ``trtexec --calib`` reads): a
    ``TRT-<version>-EntropyCalibration2`` header, then ``name: <scale as big-endian float32 hex>``
    with ``scale = amax / 127``. TensorRT ignores a cache whose header names another version."""
    import struct

    lines = [f"TRT-{tensorrt_version_number(trt_version)}-EntropyCalibration2"]
    for name, amax in sorted(ranges.items()):
        lines.append(f"{name}: {struct.pack('>f', float(amax) / 127.0).hex()}")
    return "\n".join(lines) + "\n"


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


DLA_ONNX = "model.dla.onnx"  # the implicit-INT8 (Q/DQ stripped) ONNX deploy writes for DLA targets
DLA_RANGES = "model.dla.ranges.json"  # its per-tensor dynamic ranges (amax) from the Q/DQ scales


@dataclass
class BuildResult:
    engine: Path
    key: EngineKey
    device: DeviceInfo
    seconds: float
    reused: bool
    trtexec: str
    gpu_fallback: list[str] = field(default_factory=list)  # DLA builds: layers that run on the GPU
    timing_cache: str = ""
    quantization: str = ""  # "explicit (Q/DQ)", "implicit (DLA: N tensor ranges)", "none"


def trtexec_command(onnx_path: Path, engine_path: Path, opts: BuildOptions, trt_version: str, timing_cache: Path | None = None,
                    calib: Path | None = None) -> str:
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
        parts.append("--int8")  # GPU: the scales come from the Q/DQ nodes; DLA: from --calib
    if calib is not None:
        parts.append(f"--calib={calib}")
    if opts.dla_core is not None:
        parts += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


def dla_int8_source(bundle: Path, manifest: Manifest) -> tuple[Path, dict[str, float]]:
    """The float ONNX and tensor ranges an INT8 DLA build uses instead of the Q/DQ ONNX."""
    onnx_path, ranges_path = bundle / DLA_ONNX, bundle / DLA_RANGES
    if DLA_ONNX not in manifest.files or DLA_RANGES not in manifest.files or not onnx_path.is_file():
        raise TargetError(
            "DLA takes only implicit INT8 (per-tensor ranges), not the Q/DQ (explicit) INT8 of this bundle, and the bundle "
            "has no implicit-INT8 form (NVIDIA/TensorRT#2222)",
            "re-deploy the INT8 artifact for a target with DLA cores (jetson-orin-nx/agx-orin/xavier-nx writes model.dla.onnx), "
            "or build for the GPU (omit --dla)",
        )
    return onnx_path, {str(k): float(v) for k, v in json.loads(ranges_path.read_text(encoding="utf-8")).items()}


def build_engine(
    bundle: str | Path,
    opts: BuildOptions | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    trt: Any = None,
    device: DeviceInfo | None = None,
    manifest: Manifest | None = None,
) -> BuildResult:
    """Build (or reuse) the engine of ``bundle`` for this device and store it in the engine cache."""
    bundle = Path(bundle)
    manifest = manifest or load_manifest(bundle)
    opts = opts or build_options(manifest)
    trt = trt or import_tensorrt()
    device = device or detect_device(trt)
    key = engine_key(manifest, device, opts.dla_core, opts.fp16, opts.int8)
    cache = EngineCache(engine_dir(bundle, manifest, cache_dir))
    engine_path, _ = cache.paths(key)
    timing_path = cache.timing_cache_path(device)
    onnx_path, ranges = bundle / manifest.model_file, None
    if opts.int8 and opts.dla_core is not None:
        onnx_path, ranges = dla_int8_source(bundle, manifest)
    calib_path = engine_path.with_suffix(".calib") if ranges is not None else None
    cmd = trtexec_command(onnx_path, engine_path, opts, device.tensorrt, timing_path, calib_path)
    if cache.has(key) and not force:
        return BuildResult(engine_path, key, device, 0.0, True, cmd)

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    configure(trt, builder, config, opts)
    quantization = "explicit (Q/DQ)" if opts.int8 else "none"
    if ranges is not None:
        n, missing = apply_dynamic_ranges(network, ranges)
        quantization = f"implicit (DLA: {n} tensor ranges from the Q/DQ scales)"
        if missing:
            log.warning("%d Q/DQ range(s) name no tensor of the parsed network (e.g. %s)", len(missing), missing[0])
    fallback = dla_fallback_layers(network, config) if opts.dla_core is not None else []
    timing_status = attach_timing_cache(config, timing_path.read_bytes() if timing_path.is_file() else None)
    add_static_profile(trt, builder, network, config, opts.batch or 1)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(
            f"TensorRT {trt.__version__} could not build an engine from '{onnx_path.name}' (see the TensorRT log above)",
            "try a larger --workspace-mb, drop --dla, or rebuild with -v for the verbose TensorRT log",
        )
    cache.directory.mkdir(parents=True, exist_ok=True)
    if not save_timing_cache(config, timing_path):
        timing_status += "; not saved (no cache after the build)"
    if calib_path is not None:
        calib_path.write_text(calibration_cache_text(ranges, device.tensorrt), encoding="utf-8")
    seconds = time.perf_counter() - start
    build_info = {**asdict(opts), "gpu": device.gpu_name, "sm_count": device.sm_count, "cuda": device.cuda, "seconds": round(seconds, 2),
                  "trtexec_equivalent": cmd, "quantization": quantization, "dla_gpu_fallback": fallback, "timing_cache": timing_status,
                  "onnx": onnx_path.name}
    path = cache.store(key, bytes(serialized), build_info)
    del parser
    return BuildResult(path, key, device, seconds, False, cmd, fallback, timing_status, quantization)
