"""TFLite/LiteRT figures for the README: the rpi5 bundles of mobilenetv2_cub100, and which model
families litert-torch converts.

    python benchmarks/tflite_figures.py table     # rpi5 fp32/fp16/int8 on cub100/test (LiteRT on this x86 CPU)
    python benchmarks/tflite_figures.py routes    # litert-torch FP32/INT8 conversion of CNNs and ViTs (random weights)

``table`` compresses mobilenetv2_cub100 to an FP32 artifact (or reuses one given with
``--artifact``), deploys it for ``rpi5`` at fp32, fp16 and int8 (PT2E, calibrated on 300 stratified
cub100/train images), validates each bundle on cub100/test against the FP32 artifact and benches
them in one interleaved run. LiteRT runs here on x86 as a stand-in for the Pi: accuracy transfers,
milliseconds do not. Writes results/tflite/{table,routes}.{json,md}. :func:`rpi5_rows` is the part
other scripts can call.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/tflite_figures.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RESULTS, RUNS, TEST, TRAIN, machine_info, write_json

OUT = RESULTS / "tflite"
PRECISIONS = ("fp32", "fp16", "int8")
ROUTE_ARCHS = ("mobilenetv2_100", "mobilenetv3_large_100", "resnet18", "efficientnet_b0", "deit_tiny_patch16_224", "vit_tiny_patch16_224")


def rpi5_rows(artifact: Path, work: Path, train: Path, test: Path, max_images: int | None = None, calib_size: int = 300,
              rounds: int = 5, iters: int = 50) -> list[dict[str, Any]]:
    """Deploy ``artifact`` (FP32) for rpi5 at each precision; validate against it; bench together."""
    from edgefg.deploy import deploy
    from edgefg.errors import EdgefgError
    from edgefg.runtime.bench import BenchOptions, run_bench
    from edgefg.validate.api import validate

    rows, bundles = [], []
    for precision in PRECISIONS:
        row: dict[str, Any] = {"target": "rpi5", "precision": precision}
        t = time.perf_counter()
        try:
            res = deploy(artifact, "rpi5", work / f"rpi5-{precision}", precision=precision, force=True, data=train, calib_size=calib_size)
            row["deploy_s"] = time.perf_counter() - t
            row["size_mb"] = (res.directory / res.manifest.model_file).stat().st_size / 1e6
            row["input"] = f"{res.manifest.preprocess.layout} {res.manifest.preprocess.dtype}"
            v = validate(res.directory, test, reference=artifact, max_images=max_images)
            row.update({k: v[k] for k in ("images", "top1", "top5", "reference_top1", "top1_drop", "worst_class_drop", "agreement")})
            worst = v["class_drops"][0] if v.get("class_drops") else {}
            row["worst_class"] = worst.get("class")
            bundles.append((res.directory, row))
        except EdgefgError as exc:
            row["error"] = str(exc)
        rows.append(row)
        print(f"rpi5 {precision}: " + (f"top-1 {row['top1']:.4f}" if "top1" in row else row["error"]), file=sys.stderr, flush=True)
    if bundles:
        bench = run_bench([b for b, _ in bundles], BenchOptions(rounds=rounds, iters=iters, warmup=10))
        for (_, row), r in zip(bundles, bench["results"]):
            row.update({"p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"], "threads": r.get("threads")})
    return rows


def render_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Measured by `{result['command']}` on {m.get('cpu', '?')} ({m.get('cores')} cores), LiteRT {result['litert']} with XNNPACK "
        f"on this x86 CPU as a stand-in for the Raspberry Pi (accuracy transfers, latency does not), batch 1. "
        f"Model `mobilenetv2_cub100`; INT8 calibrated on {result['calibration']}; validated on {result['validation']} against the FP32 artifact (ONNX Runtime).",
        "",
        "| target | precision | input | size MB | top-1 | top-1 drop (pts) | worst-class drop (pts) | agreement with FP32 | p50 ms here |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['precision']} | not available: {r['error'][:100]} | | | | | | |")
            continue
        lines.append(
            f"| {r['target']} | {r['precision']} | {r['input']} | {r['size_mb']:.2f} | {r['top1']:.4f} | {r['top1_drop']:+.2f} | "
            f"{r['worst_class_drop']:.1f} ({r.get('worst_class')}) | {r['agreement']:.4f} | {r.get('p50_ms', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"


def table(args: argparse.Namespace) -> dict[str, Any]:
    from importlib import metadata

    model_dir, train, test = MODEL, TRAIN, TEST
    if not model_dir.is_dir():
        raise SystemExit(f"real data not found at {DATA} (set EDGEFG_DATA)")
    work = RUNS / "tflite"
    work.mkdir(parents=True, exist_ok=True)
    artifact = Path(args.artifact) if args.artifact else None
    if artifact is None:
        from edgefg.compress.api import CompressOptions, compress
        from edgefg.models.loader import load_model

        artifact = compress(load_model(model_dir), work / "artifact-fp32", CompressOptions(recipe="fp32", force=True, latency_iters=3)).directory
    rows = rpi5_rows(artifact, work, train, test, args.max_images, args.calib_size, args.rounds, args.iters)
    return {
        "command": "python benchmarks/tflite_figures.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "litert": metadata.version("ai-edge-litert"),
        "calibration": f"cub100/train, {args.calib_size} images stratified over 100 classes",
        "validation": f"cub100/test{'' if not args.max_images else f' (first {args.max_images})'}",
        "rows": rows,
    }


def routes(args: argparse.Namespace) -> dict[str, Any]:
    """Convert random-weight timm models with the converter's own functions: FP32 error and INT8 cosine."""
    import numpy as np
    import timm
    import torch

    from edgefg.converters.onnx_to_tflite import _int8_model, _litert, _short
    from edgefg.models.loader import exportable_layers
    from edgefg.runtime.backends.tflite import TFLiteBackend, inspect_tflite

    litert_torch, _ = _litert()
    rows = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 224, 224, 3)).astype(np.float32)
    for arch in args.archs:
        row: dict[str, Any] = {"arch": arch}
        torch.manual_seed(0)
        with exportable_layers():
            module = timm.create_model(arch, num_classes=100).eval()
        _randomize_norms(module, torch)  # timm zero-inits some norms; a converter would fold those branches away
        nhwc = litert_torch.to_channel_last_io(module, args=[0]).eval()
        example = torch.zeros(1, 224, 224, 3)
        with torch.no_grad():
            ref = np.concatenate([nhwc(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
        for precision in ("fp32", "int8"):
            path = OUT / "routes" / f"{arch}-{precision}.tflite"
            path.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            try:
                if precision == "fp32":
                    with torch.no_grad():
                        path.write_bytes(litert_torch.convert(nhwc, (example,)).model_content())
                else:
                    path.write_bytes(_int8_model(litert_torch, torch, nhwc, example, rng.standard_normal((16, 224, 224, 3)).astype(np.float32)).model_content())
                info = inspect_tflite(str(path))
                from edgefg.manifest import Manifest, Preprocess

                manifest = Manifest("r", "bundle", path.name, "tflite", "tflite", precision, [str(i) for i in range(100)], Preprocess(layout="NHWC"), [info.input], [info.output])
                inp = x if precision == "fp32" else np.clip(np.round(x / info.input.quant_scale + info.input.quant_zero_point), -128, 127).astype(np.int8)
                with TFLiteBackend(path, manifest, num_threads=2) as b:
                    got = b.infer(inp)
                cos = float(np.min(np.sum(got * ref, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))))
                row[precision] = {"ok": True, "seconds": round(time.perf_counter() - t, 1), "max_abs": float(np.abs(got - ref).max()),
                                  "cosine_min": cos, "size_mb": path.stat().st_size / 1e6}
            except Exception as exc:  # record the failure with its error: that is the figure
                row[precision] = {"ok": False, "seconds": round(time.perf_counter() - t, 1), "error": _short(exc)}
            finally:
                path.unlink(missing_ok=True)
            print(arch, precision, row[precision], file=sys.stderr, flush=True)
        rows.append(row)
    return {"command": "python benchmarks/tflite_figures.py " + " ".join(sys.argv[1:]), "rows": rows}


def _randomize_norms(model: Any, torch: Any) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)


def render_routes(result: dict[str, Any]) -> str:
    lines = [
        f"litert-torch conversion of random-weight timm models, 224×224, NHWC I/O (`{result['command']}`); "
        "INT8 = PT2E static, calibrated on random inputs (a route check, not an accuracy figure).",
        "",
        "| model | FP32 | max abs vs torch | INT8 | cosine vs torch |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        f, i = r["fp32"], r["int8"]
        lines.append(
            f"| {r['arch']} | {'ok' if f['ok'] else 'fails: ' + f['error']} | {f.get('max_abs', float('nan')):.2g} | "
            f"{'ok' if i['ok'] else 'fails: ' + i['error']} | {i.get('cosine_min', float('nan')):.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["table", "routes"])
    ap.add_argument("--artifact", help="table: an FP32 artifact of mobilenetv2_cub100 to reuse")
    ap.add_argument("--calib-size", type=int, default=300)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--archs", nargs="+", default=list(ROUTE_ARCHS))
    args = ap.parse_args()
    os.environ.setdefault("EDGEFG_QUIET", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    result = table(args) if args.what == "table" else routes(args)
    md = render_table(result) if args.what == "table" else render_routes(result)
    write_json(OUT / f"{args.what}.json", result)
    (OUT / f"{args.what}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
