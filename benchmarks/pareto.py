"""FP32 vs INT8 vs pruned vs token-reduced, side by side: the accuracy/latency Pareto comparison.

    python benchmarks/pareto.py          # part of `make bench`

The families on cub100 (real data, ``EDGEFG_DATA``):

* **MobileNetV2** (mobilenetv2_cub100): FP32 and INT8 (NNCF PTQ), made here with the CLI; when
  ``benchmarks/compress_figures.py prune`` has been run, also its CPU-recovered 30 % pruning and that
  model quantized to INT8 by a second ``edgefg compress`` run.
* **The recovery families** of ``benchmarks/cnn_recovery.py evaluate`` (EfficientNet-Lite0 and
  MobileNetV2: pruning curves recovered on a GPU, input sizes, INT8), when it has been run.
* **hybrid ViT** (``benchmarks/compress_figures.py vit``): plain, EViT/ToMe keep 0.7/0.5, EViT 0.5
  fine-tuned with and without CLCA, ILA adapters, INT8.

Accuracy: every model file is scored once on all of cub100/test with OpenVINO (top-1, top-5, the
worst class's drop in images with its paired sign-test p against the family's FP32 model); the
scores are cached under ``runs/pareto/scores/`` keyed by the file's sha256 and the data, so a
re-run only re-times. Speed: ALL models are timed in ONE interleaved loop (OpenVINO CPU, same
threads): batch-1 latency (LATENCY hint, sync calls) and throughput (THROUGHPUT hint, async queue),
medians over rounds. Writes results/pareto.{json,md,png} and the result block ``pareto``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/pareto.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import COMPRESS_RUNS, DATA, MODEL, REPO, RUNS, TEST, TRAIN, machine_info, machine_line, run_edgefg, write_block, write_json
from benchmarks.common import RESULTS as OUT

SCORES = RUNS / "pareto" / "scores"
THREADS = 2
_TEST_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


# -- accuracy ---------------------------------------------------------------------------------


@dataclass
class Scores:
    """Top-5 predictions of one model on one labelled set (rows aligned with ``labels``)."""

    top5: np.ndarray
    labels: np.ndarray
    names: list[str]

    def metrics(self) -> dict:
        from edgefg.validate.metrics import classification

        scores = np.zeros((len(self.labels), len(self.names)), np.float32)  # rank → score, enough for top-k metrics
        np.put_along_axis(scores, self.top5.astype(np.int64), np.arange(5, 0, -1, dtype=np.float32)[None], axis=1)
        return classification(scores, self.labels, self.names)

    def summary(self, reference: Scores) -> dict:
        from edgefg.validate.metrics import class_drops

        m, r = self.metrics(), reference.metrics()
        drops = class_drops(m, r)  # largest drop in points first
        worst = drops[0] if drops else None
        n = max(1, len(drops))  # the worst of n classes: Bonferroni-adjust its p for having been picked
        return {
            "top1": m["top1"], "top5": m["top5"], "worst_class_accuracy": m["worst_class_accuracy"],
            "top1_change_pts": 100 * (m["top1"] - r["top1"]),
            "worst_class": worst["class"] if worst else None,
            "worst_class_drop_pts": worst["drop_pts"] if worst else 0.0,
            "worst_class_drop_images": f"{worst['drop_images']}/{worst['images']}" if worst else "0",
            "worst_class_p": worst["p_value"] if worst and worst["p_value"] is not None else 1.0,
            "worst_class_p_adjusted": min(1.0, n * (worst["p_value"] if worst and worst["p_value"] is not None else 1.0)),
            "classes_compared": n,
            "classes_significant_drop": sum(1 for d in drops if d["drop_pts"] > 0 and min(1.0, n * (d["p_value"] or 1)) < 0.05),
        }


def _sha256(path: Path) -> str:
    from edgefg.manifest import sha256_file

    return sha256_file(path)


def _test_samples(data: Path, labels: Sequence[str], spec, limit: int | None = None) -> tuple[list, str]:
    from edgefg.calibration.dataset import scan, stratified_subset

    samples = scan(data, labels).samples
    if limit:
        samples = stratified_subset(samples, limit, 0)
    key = hashlib.sha256(json.dumps([str(data), [str(s.path) for s in samples], [s.label for s in samples],
                                     spec.__dict__, list(labels)], default=str).encode()).hexdigest()[:16]
    return samples, key


def _test_arrays(data: Path, labels: Sequence[str], spec, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    from edgefg.calibration.dataset import iter_batches

    samples, key = _test_samples(data, labels, spec, limit)
    if key not in _TEST_CACHE:
        xs, ys = [], []
        for b in iter_batches(samples, spec, 64):
            xs.append(b.x)
            ys.append(b.labels)
        _TEST_CACHE.clear()
        _TEST_CACHE[key] = (np.concatenate(xs), np.concatenate(ys))
    x, y = _TEST_CACHE[key]
    return x, y, key


def _compile(path: Path, hint: str = "LATENCY"):
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": THREADS}
    return core.compile_model(core.read_model(str(path)), "CPU", cfg)


def score_onnx(path: str | Path, data: Path, labels: Sequence[str], spec, limit: int | None = None) -> Scores:
    """Score an ONNX classifier on a labelled folder (``limit``: a stratified subset) with OpenVINO
    (f32 for float layers, INT8 where the graph has Q/DQ); cached by (file sha256, data + preprocessing)."""
    path = Path(path)
    _, data_key = _test_samples(data, labels, spec, limit)
    cache = SCORES / f"{_sha256(path)[:24]}-{data_key}.npz"
    if cache.is_file():  # decode the images only on a miss
        with np.load(cache) as z:
            return Scores(z["top5"], z["labels"], list(labels))
    x, y, _ = _test_arrays(data, labels, spec, limit)
    compiled = _compile(path, "THROUGHPUT")
    import openvino as ov

    out = np.zeros((len(x), 5), np.int16)
    queue = ov.AsyncInferQueue(compiled)

    def done(request, start):
        logits = request.get_output_tensor(0).data
        out[start : start + len(logits)] = np.argsort(-logits, axis=1)[:, :5]

    queue.set_callback(done)
    for i in range(0, len(x), 16):
        queue.start_async({0: x[i : i + 16]}, i)
    queue.wait_all()
    SCORES.mkdir(parents=True, exist_ok=True)
    np.savez(cache, top5=out, labels=y)
    return Scores(out, y, list(labels))


# -- speed ------------------------------------------------------------------------------------


def time_interleaved(models: dict[str, Path], input_size: Sequence[int] | None, rounds: int = 5, iters: int = 20, tput_seconds: float = 1.0) -> dict:
    """Batch-1 latency (LATENCY hint, sync) and throughput (THROUGHPUT hint, async queue) of every
    model, interleaved round by round with edgefg's one timing helper (the compress report's and
    ``edgefg bench``'s), so machine noise hits all alike; latency = median of the calls, IQR beside it. ``input_size`` None: each model's own
    (static) spatial size."""
    import openvino as ov

    from edgefg.runtime.engine.timing import interleaved_rounds, latency_summary, time_calls

    print(f"timing: {len(models)} models, {rounds} interleaved rounds", flush=True)  # marks the phase that wants a quiet machine
    lat = {n: _compile(p, "LATENCY") for n, p in models.items()}
    rng = np.random.default_rng(0)
    xs = {n: rng.standard_normal((1, 3, *(input_size or [d.get_length() for d in list(c.inputs[0].get_partial_shape())[2:]]))).astype(np.float32)
          for n, c in lat.items()}
    tput = {n: ov.AsyncInferQueue(_compile(p, "THROUGHPUT")) for n, p in models.items()}
    fps: dict[str, list[float]] = {n: [] for n in models}

    def runner(n: str):
        def run(k: int) -> list[float]:
            ms = time_calls(lambda: lat[n](xs[n]), k, warmup=1)
            q, count, t = tput[n], 0, time.perf_counter()  # the throughput burst of this round, right after
            while time.perf_counter() - t < tput_seconds:
                for _ in range(len(q)):
                    q.start_async({0: xs[n]})
                    count += 1
                q.wait_all()
            fps[n].append(count / (time.perf_counter() - t))
            return ms

        return run

    for n in models:
        time_calls(lambda: lat[n](xs[n]), 0, warmup=3)
    times = dict(zip(models, interleaved_rounds([runner(n) for n in models], rounds, iters)))
    res = {}
    for n in models:
        s = latency_summary(times[n])
        res[n] = {"latency_ms_p50": s["p50"], "latency_ms_iqr": s["iqr"], "latency_ms_min": float(np.min(times[n])),
                  "throughput_fps": float(np.median(fps[n]))}
    res["_method"] = (f"OpenVINO {ov.__version__.split('-')[0]} CPU, {THREADS} threads, f32 precision hint (INT8 layers run INT8); {rounds} interleaved rounds "
                      f"(edgefg.runtime.engine.timing): batch-1 latency = median of {rounds}×{iters} sync calls (LATENCY hint), throughput = async queue for "
                      f"{tput_seconds:g} s per round (THROUGHPUT hint, batch 1 requests), median over rounds")
    print("timing: done", flush=True)
    return res


# -- the two families -------------------------------------------------------------------------


def mobilenet_family() -> tuple[dict[str, Path], Path]:
    model, train = MODEL, TRAIN
    pruned = COMPRESS_RUNS / "mnv2-prune"
    has_pruned = (pruned / "manifest.json").is_file()
    if not has_pruned:  # the GPU-recovered pruning curves come in through recovery_families()
        print(f"note: {pruned.relative_to(REPO)} missing: the CPU-recovered 30 % pruning of `compress_figures.py prune` is left out", flush=True)
    made = RUNS / "pareto"
    quick = ["--data", str(train), "--val-size", "100", "--latency-iters", "3", "--no-plot", "--force"]
    jobs = {
        "mnv2-fp32": [str(model), "--recipe", "fp32", "-o", str(made / "mnv2-fp32"), "--force", "--no-plot", "--latency-iters", "3"],
        "mnv2-int8": [str(model), "--recipe", "int8", *quick, "-o", str(made / "mnv2-int8")],
        "mnv2-prune-int8": [str(pruned), "--recipe", "int8", *quick, "-o", str(made / "mnv2-prune-int8")],
    }
    if not has_pruned:
        jobs.pop("mnv2-prune-int8")
    for name, args in jobs.items():
        src = pruned if name == "mnv2-prune-int8" else model
        stamp = made / name / "source.sha256"
        from edgefg.versions import library_versions  # noqa: PLC0415

        want = hashlib.sha256(json.dumps([_sha256(src / "model.onnx") if name == "mnv2-prune-int8" else _sha256(src / "model.safetensors"),
                                          args, library_versions()], default=str).encode()).hexdigest()
        if not (made / name / "manifest.json").is_file() or not stamp.is_file() or stamp.read_text() != want:
            run_edgefg("compress", *args, echo=True)
            stamp.write_text(want)
    files = {
        "FP32": made / "mnv2-fp32" / "model.onnx",
        "INT8": made / "mnv2-int8" / "model.onnx",
    }
    if has_pruned:
        files["pruned 30 % + KD (CPU, 4 epochs)"] = pruned / "model.onnx"
        files["pruned 30 % + KD (CPU, 4 epochs), INT8"] = made / "mnv2-prune-int8" / "model.onnx"
    return files, model


def vit_family() -> dict[str, Path]:
    listing = COMPRESS_RUNS / "vit-hybrid" / "variants.json"
    if not listing.is_file():
        raise SystemExit(f"missing {listing.relative_to(REPO)}: run `python benchmarks/compress_figures.py vit` first (make bench does)")
    files = {name: REPO / rel for name, rel in json.loads(listing.read_text()).items()}
    accuracy_aware = COMPRESS_RUNS / "vit-int8" / "variants.json"  # benchmarks/compress_figures.py vit-int8, when run
    if accuracy_aware.is_file():
        files.update({name: REPO / rel for name, rel in json.loads(accuracy_aware.read_text()).items() if (REPO / rel).is_file()})
    return files


def recovery_families() -> dict[str, dict[str, dict[str, str]]]:
    """The families of ``benchmarks/cnn_recovery.py evaluate`` (EfficientNet-Lite0 and the
    GPU-recovered MobileNetV2 variants: pruning curves, input sizes, INT8), when it has been run."""
    listing = RUNS / "cnn-recovery" / "variants.json"
    if not listing.is_file():
        print(f"note: {listing.relative_to(REPO)} missing: the EfficientNet-Lite0 / recovery families are left out "
              "(run `python benchmarks/cnn_recovery.py evaluate --weights DIR` first)", flush=True)
        return {}
    return json.loads(listing.read_text())


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """True for points not dominated (lower latency AND higher accuracy) by another point."""
    return [not any((l2 <= l1 and a2 >= a1) and (l2 < l1 or a2 > a1) for l2, a2 in points) for l1, a1 in points]


def render(result: dict) -> str:
    lines = [f"Machine: {result['machine']}. {result['method']}.", "",
             "| family | variant | MACs | size MB | batch-1 latency | throughput | top-1 | Δ top-1 | worst class: images lost, p (adjusted) | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for fam, rows in result["families"].items():
        base = rows[0]
        for r in rows:
            worst = "–" if r is base else f"{r['worst_class_drop_images']}, p={r['worst_class_p']:.2g} ({r['worst_class_p_adjusted']:.2g})"
            delta = "–" if r is base else f"{r['top1_change_pts']:+.2f} pt"
            lines.append(
                f"| {fam} | {r['variant']} | {r['macs'] / 1e6:.0f} M | {r['size_mb']:.2f} | {r['latency_ms_p50']:.2f} ms "
                f"({base['latency_ms_p50'] / r['latency_ms_p50']:.2f}×) | {r['throughput_fps']:.0f}/s | {100 * r['top1']:.2f} % | "
                f"{delta} | {worst} | {'●' if r['pareto'] else ''} |")
    lines += ["", "● = on the family's accuracy/latency Pareto front (no other variant is both faster and more accurate). "
              "Δ and worst class are against the family's FP32 model on the same images; the worst class is the one with the largest "
              "drop in points, with its paired sign-test p and, in brackets, that p Bonferroni-adjusted for having been picked as the worst "
              "of all classes (adjusted p < 0.05: a real loss, not noise). Plot: `results/pareto.png`.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(result["families"].items())
    cols = min(2, len(fams))
    nrows = (len(fams) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(8.0 * cols, 5.5 * nrows), squeeze=False)
    for ax in axes.flat[len(fams):]:
        ax.axis("off")
    for ax, (fam, rows) in zip(axes.flat, fams):
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms_p50"])
        ax.plot([r["latency_ms_p50"] for r in front], [100 * r["top1"] for r in front], "-", color="tab:green", alpha=0.6, label="Pareto front")
        floor = 100 * rows[0]["top1"] - 8.0  # collapsed variants (a curve's far end) would squash the useful range: drawn on the floor
        low = min(100 * r["top1"] for r in rows) < floor
        for r in rows:
            y = max(100 * r["top1"], floor) if low else 100 * r["top1"]
            below = low and 100 * r["top1"] < floor
            ax.plot(r["latency_ms_p50"], y, "v" if below else "o", color="tab:green" if r["pareto"] else "tab:gray")
            ax.annotate(r["variant"] + (f" ({100 * r['top1']:.0f} %)" if below else ""), (r["latency_ms_p50"], y), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        if low:
            ax.set_ylim(floor - 0.5, None)
        ax.set_xlabel("batch-1 latency, ms (OpenVINO CPU, 2 threads)")
        ax.set_ylabel("top-1 on cub100/test, %")
        ax.set_title(fam)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    if not TEST.is_dir():
        raise SystemExit(f"real data not found at {DATA} (set EDGEFG_DATA)")
    from edgefg.models.loader import load_model
    from edgefg.models.stats import onnx_stats

    mnv2_files, model_dir = mobilenet_family()
    ref_model = load_model(model_dir)
    labels, spec = ref_model.labels, ref_model.preprocess
    families = {"MobileNetV2 (cub100)": mnv2_files, "hybrid ViT (cub100)": vit_family()}
    specs: dict[str, tuple] = {}  # per-file (labels, preprocessing) where a family's models differ from mobilenetv2_cub100's
    for fam, files in recovery_families().items():
        families[fam] = {v: REPO / f["onnx"] for v, f in files.items()}
        for v, f in files.items():
            m = load_model(REPO / f["model"] if not Path(f["model"]).is_absolute() else f["model"])
            specs[f"{fam}: {v}"] = (m.labels, m.preprocess)
    test = TEST
    all_files = {f"{fam}: {v}": p for fam, files in families.items() for v, p in files.items()}
    timing = time_interleaved(all_files, None, rounds=args.rounds)  # each model at its own input size
    out: dict[str, list[dict]] = {}
    for fam, files in families.items():
        first = next(iter(files))
        ref_scores = score_onnx(files[first], test, *specs.get(f"{fam}: {first}", (labels, spec)))
        rows = []
        for v, p in files.items():
            st = onnx_stats(p)
            lab, sp = specs.get(f"{fam}: {v}", (labels, spec))
            rows.append({"variant": v, "onnx": str(p.relative_to(REPO)), "sha256": _sha256(p), "macs": st["macs"], "params": st["params"],
                         "input_size": list(sp.input_size), "size_mb": p.stat().st_size / 1e6, **timing[f"{fam}: {v}"],
                         **score_onnx(p, test, lab, sp).summary(ref_scores)})
        for r, on in zip(rows, pareto_front([(r["latency_ms_p50"], r["top1"]) for r in rows])):
            r["pareto"] = on
        out[fam] = rows
    info = machine_info()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in set(info.get("flags", []))]
    result = {"machine": machine_line(extra=", ".join(isa) or "no AVX2"), "method": timing["_method"], "data": "cub100/test, 2,903 images", "families": out}
    write_json(OUT / "pareto.json", result)
    md = render(result)
    (OUT / "pareto.md").write_text(md, encoding="utf-8")
    plot(result, OUT / "pareto.png")
    print(md)
    if not args.no_readme:
        cmd = "`python benchmarks/pareto.py` (part of `make bench`)"
        write_block("pareto", f"Written by {cmd}.\n\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
