"""Preprocessing fidelity on real data: edgefg's preprocessing vs timm's own evaluation.

    python benchmarks/preprocess_parity.py            # writes results/preprocess_parity.json + result block

The same model (its FP32 ONNX export, run by ONNX Runtime) scores cub100/test three ways, so only the preprocessing differs:
timm's own eval transform (PIL decode, ``resolve_data_config`` + ``create_transform``), edgefg's
``pil`` resizer and edgefg's ``opencv`` resizer. Then a *squash* model (``crop_mode: squash``, the
case that used to be treated as a centre crop): mobilenetv2_cub100 given a squash config, on the test
images stretched to 4:3 (as non-square photos of a model trained with squash would be): timm's own
evaluation vs edgefg honouring squash vs the old centre-crop treatment.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/preprocess_parity.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RUNS, TEST, cpu_model, write_block, write_json
from benchmarks.common import RESULTS as OUT


def evaluate(session, samples, batch_fn, batch: int = 64) -> np.ndarray:
    """Top-1 predictions of the model on ``samples`` with inputs from ``batch_fn(paths)``."""
    name = session.get_inputs()[0].name
    preds = []
    for i in range(0, len(samples), batch):
        x = batch_fn([s.path for s in samples[i : i + batch]])
        preds.append(session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0].argmax(1))
    return np.concatenate(preds)


def stretched_copy(samples, root: Path, size=(227, 302)) -> list:
    """Each test image resized to H×W (4:3), saved losslessly: what a squash-trained model's photos look like."""
    import cv2

    from edgefg.calibration.dataset import Sample
    from edgefg.runtime.engine.preprocess import read_image

    out = []
    for s in samples:
        dst = root / s.path.parent.name / (s.path.stem + ".png")
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dst), cv2.resize(read_image(s.path), (size[1], size[0]), interpolation=cv2.INTER_CUBIC))
        out.append(Sample(dst, s.label))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-images", type=int, help="first N test images per run (quick check)")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--speed", action="store_true", help="only time the two resizers per frame (result block preprocess-speed)")
    args = ap.parse_args()
    if args.speed:
        return speed(args.no_readme)

    import dataclasses

    from edgefg.calibration.dataset import scan
    from edgefg.models.loader import load_model, preprocess_from_cfg
    from edgefg.runtime.engine.preprocess import preprocess, read_image
    from edgefg.validate.preprocess_check import reference_batch

    model_dir, test = MODEL, TEST
    if not model_dir.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    t0 = time.time()
    model = load_model(model_dir)
    import onnxruntime as ort

    from edgefg.converters.torch_to_onnx import export_onnx

    onnx_path = export_onnx(model.module, model.preprocess.input_size, RUNS / "preprocess-parity" / "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    samples = scan(test, model.labels).samples[: args.max_images]
    y = np.array([s.label for s in samples])
    cfg = model.source["data_config"]

    def edgefg_batch(spec):
        return lambda paths: np.stack([preprocess(read_image(p), spec) for p in paths])

    def timm_batch(config, spec):
        return lambda paths: reference_batch(paths, spec, config)

    def acc(pred) -> float:
        return float((pred == y).mean())

    runs: dict[str, dict] = {}

    def run(name: str, samples_, fn):
        t = time.time()
        pred = evaluate(session, samples_, fn)
        runs[name] = {"top1": acc(pred), "pred": pred, "seconds": round(time.time() - t, 1)}
        print(f"{name:<48} top-1 {100 * runs[name]['top1']:.2f} %  ({runs[name]['seconds']} s)", flush=True)

    pil = model.preprocess
    cv = dataclasses.replace(pil, resize="opencv")
    run("timm eval transform (PIL)", samples, timm_batch(cfg, pil))
    run("edgefg, resize pil (default)", samples, edgefg_batch(pil))
    run("edgefg, resize opencv", samples, edgefg_batch(cv))

    squash_cfg = {**cfg, "crop_mode": "squash", "crop_pct": 1.0}
    work = RUNS / "preprocess-parity" / "stretched"
    stretched = stretched_copy(samples, work)
    squash = preprocess_from_cfg(squash_cfg)
    centre = dataclasses.replace(squash, crop_mode="center")
    run("squash model: timm eval transform (PIL)", stretched, timm_batch(squash_cfg, squash))
    run("squash model: edgefg honouring squash", stretched, edgefg_batch(squash))
    run("squash model: centre crop (edgefg before)", stretched, edgefg_batch(centre))

    def agree(a: str, b: str) -> float:
        return float((runs[a]["pred"] == runs[b]["pred"]).mean())

    result = {
        "machine": cpu_model(),
        "model": "mobilenetv2_cub100",
        "data": f"cub100/test ({len(samples)} images)",
        "runs": {k: {"top1": v["top1"], "seconds": v["seconds"]} for k, v in runs.items()},
        "agreement_with_timm": {
            "edgefg, resize pil (default)": agree("edgefg, resize pil (default)", "timm eval transform (PIL)"),
            "edgefg, resize opencv": agree("edgefg, resize opencv", "timm eval transform (PIL)"),
            "squash model: edgefg honouring squash": agree("squash model: edgefg honouring squash", "squash model: timm eval transform (PIL)"),
            "squash model: centre crop (edgefg before)": agree("squash model: centre crop (edgefg before)", "squash model: timm eval transform (PIL)"),
        },
        "wall_s": round(time.time() - t0, 1),
        "stretched_size": [227, 302],
    }
    write_json(OUT / "preprocess_parity.json", result)
    md = markdown(result)
    print(md)
    if not args.no_readme and args.max_images is None:
        write_block("preprocess-parity", md)
    shutil.rmtree(work.parent, ignore_errors=True) if os.environ.get("EDGEFG_CLEAN") else None
    return 0


def speed(no_readme: bool, rounds: int = 7, iters: int = 20) -> int:
    """Per-frame preprocessing time, pil vs opencv resizer, interleaved rounds (medians)."""
    import dataclasses

    from edgefg.manifest import Preprocess
    from edgefg.runtime.engine.preprocess import preprocess

    rng = np.random.default_rng(0)
    frames = {"1920×1080 camera frame": rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8),
              "500×375 photo": rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)}
    spec = Preprocess(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic")
    specs = {r: dataclasses.replace(spec, resize=r) for r in ("pil", "opencv")}
    times: dict[tuple[str, str], list[float]] = {(f, r): [] for f in frames for r in specs}
    for _ in range(rounds):
        for f, img in frames.items():
            for r, sp in specs.items():
                preprocess(img, sp)
                t = time.perf_counter()
                for _ in range(iters):
                    preprocess(img, sp)
                times[(f, r)].append((time.perf_counter() - t) / iters * 1000)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = [f"| {f} | {med[(f, 'pil')]:.2f} ms | {med[(f, 'opencv')]:.2f} ms | {med[(f, 'pil')] / med[(f, 'opencv')]:.1f}× |" for f in frames]
    md = (f"Written by `python benchmarks/preprocess_parity.py --speed` on {cpu_model()}: one thread, bicubic, crop_pct 0.875 → 224×224, "
          f"medians of {rounds} interleaved rounds of {iters} frames.\n\n| input | pil (exact) | opencv | pil / opencv |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(md)
    write_json(OUT / "preprocess_speed.json", {"machine": cpu_model(), "ms": {f"{f} / {r}": v for (f, r), v in med.items()}})
    if not no_readme:
        write_block("preprocess-speed", md)
    return 0


def markdown(r: dict) -> str:
    runs, agree = r["runs"], r["agreement_with_timm"]
    base = runs["timm eval transform (PIL)"]["top1"]
    sq = runs["squash model: timm eval transform (PIL)"]["top1"]
    rows = []
    for name, v in runs.items():
        ref = sq if name.startswith("squash") else base
        a = agree.get(name)
        rows.append(f"| {name} | {100 * v['top1']:.2f} % | {100 * (v['top1'] - ref):+.2f} pt | {'–' if a is None else f'{100 * a:.2f} %'} |")
    return (
        f"Written by `python benchmarks/preprocess_parity.py` on {r['machine']}: {r['model']} (one FP32 ONNX export in ONNX Runtime, so only preprocessing differs) "
        f"on {r['data']}; the squash rows use the same images stretched to {r['stretched_size'][0]}×{r['stretched_size'][1]} and the model "
        "given `crop_mode: squash, crop_pct: 1.0`.\n\n"
        "| preprocessing | top-1 | vs timm's own | same prediction as timm |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
