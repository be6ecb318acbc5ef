"""Speed suite: edgefg's runtime vs the bare engines on the same model files, INT8 efficiency
against the CPU's peak int8 MAC rate, and the wall time of compress + deploy.

    make bench        # = python benchmarks/run.py

Everything is measured in one run on one machine and reported as ratios with medians over
repeated, interleaved rounds (machines here are noisy). Writes benchmarks/out/bench.json and
bench.md, and the result block between ``bench:start``/``bench:end``. Not a test: nothing here
asserts; the targets (≥ 0.95× of the bare engine) are printed next to the measurements.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/run.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, OUT, TRAIN, machine_info, write_block, write_json


def timed_rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


# -- bare engines: the same model file, the same threads, nothing of edgefg in the loop --------
def bare_openvino(bundle: Path, manifest, x: np.ndarray, threads: int) -> Callable[[], object]:
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
              "INFERENCE_PRECISION_HINT": manifest.backend_options.get("inference_precision", "f32")}
    req = core.compile_model(core.read_model(str(bundle / manifest.model_file)), "CPU", config).create_infer_request()
    return lambda: req.infer({0: x})


def bare_onnxruntime(bundle: Path, manifest, x: np.ndarray, threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(bundle / manifest.model_file), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def bare_tflite(bundle: Path, manifest, x: np.ndarray, threads: int) -> Callable[[], object]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(bundle / manifest.model_file), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def call():
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)

    return call


BARE = {"openvino": bare_openvino, "onnxruntime": bare_onnxruntime, "tflite": bare_tflite}


def benchmark_app(bundle: Path, manifest, threads: int, seconds: int) -> dict | None:
    """OpenVINO's own benchmark_app with matched settings; None where it is not installed."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        return None
    shape = "[" + ",".join(str(d if isinstance(d, int) else 1) for d in manifest.inputs[0].shape) + "]"
    # benchmark_app only takes -nthreads with -hint none; 1 stream × N threads is what edgefg's LATENCY hint gives
    cmd = [exe, "-m", str(bundle / manifest.model_file), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-api", "sync", "-b", "1",
           "-shape", shape, "-nthreads", str(threads), "-t", str(seconds),
           "-infer_precision", manifest.backend_options.get("inference_precision", "f32")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 60)
    out = proc.stdout
    fps = re.search(r"Throughput:\s+([\d.]+)\s+FPS", out)
    if not fps:
        print(f"benchmark_app gave no throughput: {(proc.stderr or out).strip().splitlines()[-1:]}", file=sys.stderr)
    med = re.search(r"Median:\s+([\d.]+)\s+ms", out)
    return {"fps": float(fps.group(1)) if fps else None, "median_ms": float(med.group(1)) if med else None, "command": " ".join(cmd)}


def peak_int8_macs_per_s(info: dict) -> dict:
    """cores × int8 MACs per cycle per core × clock, from what this machine reports."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    clock = float(mhz.group(1)) * 1e6 if mhz else None
    flags = set(info.get("flags", []))
    if "avx512_vnni" in flags:
        per_cycle, how = 128, "AVX-512 VNNI: VPDPBUSD does 64 int8 MACs per 512-bit instruction, 2 per cycle (two FMA ports)"
    elif "avx_vnni" in flags or "avx2" in flags:
        per_cycle, how = 64, "AVX2/AVX-VNNI: 32 int8 MACs per 256-bit instruction, 2 per cycle"
    else:
        per_cycle, how = None, "unknown SIMD"
    cores = os.cpu_count() or 1
    peak = cores * per_cycle * clock if (per_cycle and clock) else None
    return {"cores": cores, "macs_per_cycle_per_core": per_cycle, "clock_hz": clock, "peak_macs_per_s": peak,
            "method": f"{cores} cores × {per_cycle} MAC/cycle ({how}) × {clock / 1e9 if clock else '?'} GHz ('cpu MHz' in /proc/cpuinfo, the nominal clock; turbo would raise the peak)"}


def build_bundles(work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """compress + deploy mobilenetv2_cub100 (timed: the 'wall time' figure)."""
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.errors import EdgefgError
    from edgefg.models.loader import load_model

    train = TRAIN
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(MODEL)
    arts = {}
    for recipe in ("fp32", "int8"):
        t = time.perf_counter()
        arts[recipe] = compress(model, work / f"art-{recipe}", CompressOptions(recipe=recipe, data=train, calib_size=300, force=True, latency_iters=3)).directory
        times[f"compress_{recipe}_s"] = time.perf_counter() - t
    bundles = {}
    for target in ("intel-cpu", "onnxruntime-cpu", "rpi5"):
        for recipe in ("fp32", "int8"):
            t = time.perf_counter()
            try:
                bundles[f"{target}-{recipe}"] = deploy(arts["fp32" if target == "rpi5" else recipe], target, work / f"{target}-{recipe}",
                                                       precision=recipe, force=True, data=train).directory
            except EdgefgError as exc:
                print(f"skipping {target} {recipe}: {exc}", file=sys.stderr)
            times[f"deploy_{target}_{recipe}_s"] = time.perf_counter() - t
    times["int8_compress_plus_openvino_deploy_s"] = times["compress_int8_s"] + times.get("deploy_intel-cpu_int8_s", 0.0)
    times["total_s"] = time.perf_counter() - t0
    return bundles, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("EDGEFG_QUIET", "1")

    from edgefg.manifest import load_manifest
    from edgefg.models.stats import onnx_stats
    from edgefg.runtime.backends.base import default_threads
    from edgefg.runtime.bench import _input_for  # noqa: PLC2701  (edgefg's bench input; no public name yet)
    from edgefg.runtime.engine.bundle import LoadedBundle

    if not MODEL.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    bundles, wall = build_bundles(work)
    threads = default_threads()
    info = machine_info()

    rows = []
    for name, bundle in bundles.items():
        manifest = load_manifest(bundle)
        x = _input_for(manifest, 1)
        model = LoadedBundle(bundle, num_threads=threads)
        ours = lambda m=model, x=x: m.scores(x)  # noqa: E731 - edgefg's runtime path (backend + dequantize)
        bare = BARE[manifest.backend](bundle, manifest, x, threads)
        r_ours, r_bare, r_app = [], [], []
        for _ in range(args.rounds):  # interleaved: drift hits both alike
            r_ours.append(timed_rate(ours, args.seconds))
            r_bare.append(timed_rate(bare, args.seconds))
            if manifest.backend == "openvino":
                app = benchmark_app(bundle, manifest, threads, max(2, int(args.seconds)))
                if app and app["fps"]:
                    r_app.append(app["fps"])
        model.close()
        row = {"bundle": name, "backend": manifest.backend, "precision": manifest.precision,
               "edgefg_fps": statistics.median(r_ours), "bare_fps": statistics.median(r_bare),
               "benchmark_app_fps": statistics.median(r_app) if r_app else None}
        row["ratio_vs_bare"] = row["edgefg_fps"] / row["bare_fps"]
        if r_app:
            row["ratio_vs_benchmark_app"] = row["edgefg_fps"] / row["benchmark_app_fps"]
        rows.append(row)
        print(f"{name}: edgefg {row['edgefg_fps']:.1f} FPS, bare {row['bare_fps']:.1f} FPS ({row['ratio_vs_bare']:.3f}×)", file=sys.stderr)

    peak = peak_int8_macs_per_s(info)
    macs = onnx_stats(bundles["onnxruntime-cpu-fp32"] / "model.onnx")["macs"] if "onnxruntime-cpu-fp32" in bundles else None
    efficiency = []
    for row in rows:
        if row["precision"] == "int8" and macs and peak["peak_macs_per_s"]:
            achieved = macs * row["edgefg_fps"]
            efficiency.append({"bundle": row["bundle"], "macs_per_image": macs, "achieved_macs_per_s": achieved,
                               "fraction_of_peak": achieved / peak["peak_macs_per_s"]})
    result = {"command": "python benchmarks/run.py " + " ".join(sys.argv[1:]), "machine": info, "threads": threads,
              "settings": {"rounds": args.rounds, "seconds": args.seconds, "batch": 1}, "wall_time": wall,
              "runtime_vs_bare": rows, "int8_peak": peak, "int8_efficiency": efficiency}
    write_json(OUT / "bench.json", result)
    md = render(result)
    (OUT / "bench.md").write_text(md)
    print(md)
    if not args.no_readme:
        write_block("bench", md)
    return 0


def render(r: dict) -> str:
    m = r["machine"]
    lines = [f"Measured by `{r['command'].strip()}` on {m.get('cpu')} ({m.get('cores')} cores), {r['threads']} threads, batch 1, "
             f"median of {r['settings']['rounds']} interleaved rounds of {r['settings']['seconds']:.0f} s each. Model `mobilenetv2_cub100`.", "",
             "| bundle | backend | precision | edgefg FPS | bare engine FPS | edgefg / bare (target ≥ 0.95) | benchmark_app FPS | edgefg / benchmark_app |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["runtime_vs_bare"]:
        app = f"{x['benchmark_app_fps']:.1f} | {x['ratio_vs_benchmark_app']:.3f}×" if x.get("benchmark_app_fps") else "– | –"
        lines.append(f"| {x['bundle']} | {x['backend']} | {x['precision']} | {x['edgefg_fps']:.1f} | {x['bare_fps']:.1f} | {x['ratio_vs_bare']:.3f}× | {app} |")
    p = r["int8_peak"]
    lines += ["", f"INT8 efficiency — peak int8 rate: {p['method']} = {p['peak_macs_per_s'] / 1e9:.0f} GMAC/s." if p.get("peak_macs_per_s") else "INT8 peak: unknown on this CPU.", ""]
    for e in r["int8_efficiency"]:
        lines.append(f"- {e['bundle']}: {e['macs_per_image'] / 1e6:.0f} MMAC/image × FPS = {e['achieved_macs_per_s'] / 1e9:.1f} GMAC/s = **{100 * e['fraction_of_peak']:.1f}%** of peak")
    w = r["wall_time"]
    lines += ["", f"Wall time of `compress --recipe int8` + `deploy --target intel-cpu` (300 calibration images, incl. ONNX export and the "
              f"before/after measurements): **{w['int8_compress_plus_openvino_deploy_s']:.0f} s** (target ≤ 120 s).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
