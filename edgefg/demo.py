"""``edgefg demo``: the built-in end-to-end job, offline, on the bundled bird classifier.

compress (fp32 + int8) → deploy (intel-cpu, onnxruntime-cpu) → validate INT8 against FP32 →
run the runtime on a generated video → bench FP32 vs INT8 → summary + next commands.

The bundled data is three CC BY 2.0 photos (see assets/demo/NOTICE); calibration and check sets
are random crops/flips of them, so the INT8 figures here are *agreement with FP32 on those
views*, not accuracy — `make results` measures accuracy on real fine-grained data.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from edgefg.outputs import write_json

ASSETS = Path(__file__).parent / "assets" / "demo"
TARGETS = ("intel-cpu", "onnxruntime-cpu")


def _views(images: list[np.ndarray], n: int, seed: int, folder: Path) -> Path:
    """Random crops (40–100% of the short side), flips and brightness changes of ``images``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = img[y : y + side, x : x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"view_{i:03d}.jpg"), crop)
    return folder


def make_video(images: list[np.ndarray], path: Path, frames_per_image: int = 30, size=(640, 480)) -> Path:
    """A slow zoom over each photo, like a camera settling on a bird (MJPG .avi)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (w, h))
    for img in images:
        for k in range(frames_per_image):
            zoom = 1.0 + 0.4 * k / frames_per_image
            ih, iw = img.shape[:2]
            ch, cw = int(ih / zoom), int(iw / zoom)
            y, x = (ih - ch) // 2, (iw - cw) // 2
            writer.write(cv2.resize(img[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def run_demo(out: Path, quick: bool = False) -> dict:
    from rich.console import Console
    from rich.table import Table

    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.models.loader import load_model
    from edgefg.runtime.bench import BenchOptions, bench_table, run_bench
    from edgefg.runtime.engine.preprocess import read_image
    from edgefg.runtime.serve import RunOptions, run_pipeline
    from edgefg.validate.api import Thresholds, validate

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    photos = sorted((ASSETS / "images").glob("*.jpg"))
    images = [read_image(p) for p in photos]
    n_calib, n_check = (12, 6) if quick else (64, 32)
    calib = _views(images, n_calib, 0, out / "data" / "calibration")
    check = _views(images, n_check, 1, out / "data" / "check")

    console.rule("[bold]1. compress")
    model = load_model(ASSETS)
    artifacts = {}
    for recipe in ("fp32", "int8"):
        opts = CompressOptions(recipe=recipe, data=calib, calib_size=n_calib, latency_iters=5 if quick else 20)
        artifacts[recipe] = compress(model, out / f"artifact-{recipe}", opts).directory
        console.print(f"{recipe}: {artifacts[recipe]}")

    console.rule("[bold]2. deploy")
    bundles: dict[tuple[str, str], Path] = {}
    for target in TARGETS:
        for recipe, art in artifacts.items():
            res = deploy(art, target, out / f"bundle-{recipe}-{target}")
            bundles[(recipe, target)] = res.directory
            p = res.manifest.parity
            console.print(f"{target:16s} {recipe}: parity cosine min {p['cosine_min']:.5f}, top-1 agreement {p['top1_agreement']:.3f}")

    console.rule("[bold]3. validate (INT8 and FP32 bundles vs the FP32 artifact, on crops of the bundled photos)")
    validations = {}
    for key, bundle in bundles.items():
        res = validate(bundle, check, reference=artifacts["fp32"], thresholds=Thresholds(min_agreement=0.8))
        validations[key] = res
        write_json(bundle.parent / f"validate-{bundle.name}.json", res)

    console.rule("[bold]4. run (the on-device runtime on a generated video)")
    video = make_video(images, out / "field.avi", frames_per_image=10 if quick else 30)
    run_bundle = bundles[("int8", "intel-cpu")]
    summary = run_pipeline(run_bundle, str(video), RunOptions(output=out / "run.jsonl"))
    lines = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    per_photo = len(lines) // len(photos)
    for i, photo in enumerate(photos):
        mid = lines[i * per_photo + per_photo // 2]["top"][0]
        console.print(f"{photo.name}: [bold]{mid['label']}[/] ({mid['score']:.2f})")
    console.print(f"{summary['frames']} frames, {summary['fps']:.1f} FPS, p50 {summary['latency_ms']['p50']:.2f} ms (JSON lines: {out / 'run.jsonl'})")

    console.rule("[bold]5. bench (FP32 vs INT8, interleaved in one run)")
    order = [bundles[(r, t)] for t in TARGETS for r in ("fp32", "int8")]
    bench = run_bench(order, BenchOptions(rounds=3 if quick else 5, iters=10 if quick else 40, warmup=3 if quick else 10))
    write_json(out / "bench.json", bench)
    console.print(bench_table(bench))
    by_bundle = {r["bundle"]: r for r in bench["results"]}

    table = Table(title="edgefg demo summary — built-in iNat bird classifier (965 classes), 2 backends × 2 precisions")
    for col in ("target", "precision", "size MB", "agreement vs FP32", "mean KL", "p50 ms", "speed-up vs FP32", "validate"):
        table.add_column(col)
    for target in TARGETS:
        base = by_bundle[str(bundles[("fp32", target)])]["latency_ms"]["p50"]
        for recipe in ("fp32", "int8"):
            b = bundles[(recipe, target)]
            r, v = by_bundle[str(b)], validations[(recipe, target)]
            table.add_row(
                target, recipe, f"{r['size_mb']:.2f}", f"{v['agreement']:.3f}", f"{v['mean_kl']:.4f}",
                f"{r['latency_ms']['p50']:.2f}", f"{base / r['latency_ms']['p50']:.2f}×", "[green]pass[/]" if v["passed"] else "[red]FAIL[/]",
            )
    console.print(table)
    console.print(
        f"Agreement is measured on {n_check} random crops of the {len(photos)} bundled photos (no labels here). "
        f"Accuracy on real fine-grained data: `make results`.\nDone in {time.perf_counter() - t_start:.0f} s. Outputs in {out}/"
    )
    console.rule("[bold]next")
    console.print(
        f"edgefg validate {bundles[('int8', 'intel-cpu')]} --data YOUR_IMAGEFOLDER --reference {artifacts['fp32']} --max-top1-drop 1 --junit report.xml\n"
        f"edgefg run {bundles[('int8', 'intel-cpu')]} --source 0            # camera 0\n"
        f"edgefg bench {bundles[('fp32', 'intel-cpu')]} {bundles[('int8', 'intel-cpu')]}\n"
        f"edgefg compress MODEL_DIR --data YOUR_TRAIN_FOLDER --val-data YOUR_TEST_FOLDER -o my-int8\n"
        f"edgefg targets"
    )
    return {"bundles": {f"{r}-{t}": str(p) for (r, t), p in bundles.items()}, "validations": validations, "bench": bench, "run": summary}
