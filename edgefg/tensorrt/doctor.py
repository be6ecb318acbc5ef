"""``edgefg doctor --target jetson-...``: a one-paste device self-test.

Reports what the device has against what the target profile expects — JetPack, L4T, TensorRT,
CUDA, GPU (module, compute capability, SM count), DLA cores, pycuda, cuda-python, OpenCV with
GStreamer — then builds a tiny bundled ONNX (``assets/doctor/tiny.onnx``) into a TensorRT engine and
times it. Every check runs even when an earlier one fails, so one paste shows everything missing.

Exit code: 0 when every required check passes (warnings allowed), 1 when a required one fails
(not a Jetson, TensorRT/pycuda/GPU missing, engine build or run failed), 2 for a bad target.
"""
from __future__ import annotations

import importlib
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgefg.errors import EdgefgError, TargetError
from edgefg.tensorrt.device import SystemPaths, cuda_toolkit_version, jetson_module, probe_gpu

TINY_ONNX = Path(__file__).resolve().parents[1] / "assets" / "doctor" / "tiny.onnx"
OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL | info
    detail: str
    required: bool = False


@dataclass
class Report:
    target: str
    checks: list[Check] = field(default_factory=list)
    engine_ms: float | None = None

    def add(self, name: str, status: str, detail: str, required: bool = False) -> Check:
        c = Check(name, status, detail, required)
        self.checks.append(c)
        return c

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "checks": [asdict(c) for c in self.checks], "engine_ms": self.engine_ms, "exit_code": self.exit_code}


def _version_matches(have: str, want: str) -> bool:
    return have.split(".")[:2] == str(want).split(".")[:2]


def jetpack_version(l4t: str | None, run: Callable[..., Any] = subprocess.run) -> tuple[str | None, str]:
    """JetPack from the ``nvidia-jetpack`` package, else from the L4T release via the target profiles."""
    if shutil.which("dpkg-query"):
        try:
            out = run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True, text=True, timeout=15)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().split("+")[0].split("-")[0], "nvidia-jetpack package"
        except (OSError, subprocess.SubprocessError):
            pass
    if l4t:
        from edgefg.targets import list_targets

        for t in list_targets():
            if str(t.runtime.get("l4t", "")) == l4t and t.runtime.get("jetpack"):
                return str(t.runtime["jetpack"]), f"L4T {l4t} (target profiles)"
    return None, ""


def _import(name: str, importer: Callable[[str], Any]) -> Any:
    try:
        return importer(name)
    except ImportError:
        return None


def run_doctor(target_name: str, paths: SystemPaths = SystemPaths(), importer: Callable[[str], Any] = importlib.import_module,
               iterations: int = 50, onnx_path: Path = TINY_ONNX) -> Report:
    from edgefg.targets import load_target
    from edgefg.tensorrt.cache import read_l4t

    target = load_target(target_name)
    if target.family != "jetson" or target.backend != "tensorrt":
        raise TargetError(f"'{target.name}' is not a Jetson/TensorRT target", "use e.g. --target jetson-orin-nano (edgefg targets lists them)")
    want = target.runtime
    rep = Report(target.name)

    jetson = jetson_module(paths)
    if jetson:
        rep.add("device", OK, f"{jetson[0]} [{jetson[1] or '?'}] ({jetson[2]})", True)
    else:
        rep.add("device", FAIL, "not a Jetson (no nvidia,tegra* entry in /proc/device-tree/compatible)", True)

    l4t = read_l4t(paths.tegra_release)
    if l4t is None:
        rep.add("L4T", FAIL if jetson else INFO, f"no {paths.tegra_release}", bool(jetson))
    else:
        rep.add("L4T", OK if _version_matches(l4t, want.get("l4t", l4t)) else WARN, f"{l4t} (profile: {want.get('l4t', '?')})")
    jp, source = jetpack_version(l4t)
    rep.add("JetPack", (OK if _version_matches(jp, want.get("jetpack", jp)) else WARN) if jp else INFO,
            f"{jp} from {source} (profile: {want.get('jetpack', '?')})" if jp else f"unknown (profile: {want.get('jetpack', '?')})")

    trt = _import("tensorrt", importer)
    if trt is None:
        rep.add("TensorRT", FAIL, "the tensorrt Python bindings are not importable (JetPack's python3-libnvinfer; use a venv with "
                                  "--system-site-packages)", True)
    else:
        v = str(trt.__version__)
        rep.add("TensorRT", OK if _version_matches(v, want.get("tensorrt", v)) else WARN, f"{v} (profile: {want.get('tensorrt', '?')})", True)

    cuda_v = cuda_toolkit_version(paths)
    rep.add("CUDA", (OK if _version_matches(cuda_v, want.get("cuda", cuda_v)) else WARN) if cuda_v else WARN,
            f"{cuda_v} (profile: {want.get('cuda', '?')})" if cuda_v else f"no {paths.cuda_home}/version.json or version.txt")

    gpu = None
    try:
        gpu = probe_gpu(0, paths)
    except EdgefgError as exc:
        rep.add("GPU", FAIL, exc.message, True)
    if gpu is not None:
        cc_ok = gpu.compute_capability == str(want.get("compute_capability", gpu.compute_capability))
        sms = f", {gpu.sm_count} SMs" if gpu.sm_count else ", SM count unknown (needs pycuda or cuda-python)"
        rep.add("GPU", OK if cc_ok else WARN, f"{gpu.name}: SM {gpu.compute_capability}{sms}, via {gpu.source} "
                                              f"(profile: SM {want.get('compute_capability', '?')})", True)

    want_dla = int(want.get("dla_cores", 0) or 0)
    if trt is not None:
        try:
            have_dla = int(trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)
            rep.add("DLA", OK if have_dla == want_dla else WARN, f"{have_dla} core(s) (profile: {want_dla})")
        except Exception as exc:  # noqa: BLE001 - a broken TensorRT install must not stop the report
            rep.add("DLA", WARN, f"TensorRT could not create a builder: {exc}")
    else:
        rep.add("DLA", INFO, f"unknown without TensorRT (profile: {want_dla})")

    from edgefg.tensorrt.builder import TRTEXEC

    trtexec = Path(TRTEXEC) if Path(TRTEXEC).is_file() else (Path(shutil.which("trtexec")) if shutil.which("trtexec") else None)
    rep.add("trtexec", OK if trtexec else INFO, str(trtexec) if trtexec else f"not found ({TRTEXEC}); only needed for the printed trtexec commands")

    pycuda = _import("pycuda.driver", importer)
    rep.add("pycuda", OK if pycuda is not None else FAIL,
            "importable" if pycuda is not None else "not importable: `edgefg run` needs it (pip install 'edgefg[runtime-tensorrt]', CUDA's nvcc on PATH)", True)
    cuda_python = _import("cuda.bindings.driver", importer) or _import("cuda.cuda", importer)
    rep.add("cuda-python", OK if cuda_python is not None else INFO,
            "importable (build-engine can read the GPU without pycuda)" if cuda_python is not None else "not installed (optional)")

    cv2 = _import("cv2", importer)
    if cv2 is None:
        rep.add("OpenCV", WARN, "cv2 not importable")
    else:
        info = cv2.getBuildInformation()
        m = re.search(r"GStreamer:\s*(\S+)", info)
        gst = bool(m and m.group(1).upper().startswith("YES"))
        rep.add("OpenCV GStreamer", OK if gst else WARN,
                f"OpenCV {cv2.__version__} with GStreamer" if gst else f"OpenCV {cv2.__version__} without GStreamer: CSI cameras "
                "(nvarguscamerasrc) will not open; use JetPack's python3-opencv (apt) in a --system-site-packages venv")

    if trt is None or pycuda is None or gpu is None:
        missing = [n for n, x in (("tensorrt", trt), ("pycuda", pycuda), ("a CUDA GPU", gpu)) if x is None]
        rep.add("engine", FAIL, f"not built: needs {', '.join(missing)}", True)
        return rep
    _engine_check(rep, trt, pycuda, target, onnx_path, iterations)
    return rep


def _engine_check(rep: Report, trt: Any, cuda: Any, target: Any, onnx_path: Path, iterations: int) -> None:
    """Build ``onnx_path`` with the builder's own code path, then run it through an EngineSession."""
    import numpy as np

    from edgefg.tensorrt.backend import BufferSpec, EngineSession
    from edgefg.tensorrt.builder import BuildOptions, attach_timing_cache, configure, network_flags, parse_onnx

    fp16 = "fp16" in target.precisions
    opts = BuildOptions("fp16" if fp16 else "fp32", fp16, False, 64)
    try:
        t0 = time.perf_counter()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt))
        parse_onnx(trt, network, logger, onnx_path)
        config = builder.create_builder_config()
        configure(trt, builder, config, opts)
        attach_timing_cache(config, None)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            rep.add("engine", FAIL, f"TensorRT {trt.__version__} could not build the tiny engine (see its log above)", True)
            return
        build_s = time.perf_counter() - t0
        expected = [BufferSpec("input", (1, 3, 32, 32), np.dtype(np.float32), True), BufferSpec("logits", (1, 3), np.dtype(np.float32), False)]
        cuda.init()
        session = EngineSession(trt, cuda, cuda.Device(0), bytes(blob), expected)
        try:
            x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
            session.run({"input": x})  # warm-up
            times = []
            for _ in range(iterations):
                t = time.perf_counter()
                y = session.run({"input": x})["logits"]
                times.append((time.perf_counter() - t) * 1000)
        finally:
            session.close()
    except EdgefgError as exc:
        rep.add("engine", FAIL, exc.message, True)
        return
    except Exception as exc:  # noqa: BLE001 - report whatever TensorRT/CUDA raised, in one line
        rep.add("engine", FAIL, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", True)
        return
    if not np.all(np.isfinite(y)):
        rep.add("engine", FAIL, "the tiny engine returned non-finite values", True)
        return
    rep.engine_ms = statistics.median(times)
    rep.add("engine", OK, f"tiny ONNX built in {build_s:.1f} s ({'fp16' if fp16 else 'fp32'}), median {rep.engine_ms:.3f} ms over "
                          f"{iterations} runs (H2D + execute + D2H)", True)


def format_report(rep: Report) -> str:
    width = max(len(c.name) for c in rep.checks)
    lines = [f"edgefg doctor --target {rep.target}"]
    lines += [f"  {c.name:<{width}}  {c.status:<4}  {c.detail}" for c in rep.checks]
    if rep.failed:
        lines.append(f"result: {len(rep.failed)} required check(s) failed: {', '.join(c.name for c in rep.failed)} (exit 1)")
    else:
        warns = [c.name for c in rep.checks if c.status == WARN]
        lines.append("result: ready" + (f" (warnings: {', '.join(warns)})" if warns else "") + " (exit 0)")
    return "\n".join(lines)
