"""Agreement-driven INT8 on unlabelled images vs plain and label-driven INT8 (issue 17, item 5).

    python benchmarks/agreement_int8.py [--model DIR] [--min-agreement 0.99 0.998] [--quick]

The user's situation: 10 labelled images per class, thousands of unlabelled frames. From
cub100/train the script takes 10 images per class as the labelled validation set (seeded) and the
rest, WITHOUT labels (flat folder of links with hashed names), as the unlabelled agreement set. Each
variant runs the edgefg CLI as a user would (the command is printed and stored):

* plain INT8 (calibration: the 10/class images);
* accuracy-aware INT8 on the 10/class labels (built-in recipe ``int8-accuracy``: ≤ 0.5 pt top-1,
  per-class budget);
* agreement-driven INT8 (``--agreement-data`` the unlabelled images), one row per ``--min-agreement``;
* the quantizer's stronger options on plain INT8: full BiasCorrection, 1,000 calibration images,
  SmoothQuant on the classifier head — and agreement-driven with full BiasCorrection.

Every artifact is then scored on all of cub100/test (top-1, top-1 agreement with the FP32 model, the
class that lost most), its batch-1 OpenVINO latency is measured interleaved with the FP32 model's (so
background load hits all alike), and the wall time of its compress run is stated. Writes
results/agreement_int8.json (one entry per ``--model``, kept across runs) and the result block
``agreement-int8`` (all models measured so far).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/agreement_int8.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import CUB, MODEL, RUNS, cpu_model, edgefg_compress, write_block, write_json
from benchmarks.common import RESULTS as RESULTS_DIR

RESULTS = RESULTS_DIR / "agreement_int8.json"
GOAL_AGREEMENT, GOAL_SPEEDUP = 0.98, 1.8


def _images(cls: Path, rng: random.Random) -> list[Path]:
    images = sorted(p for p in cls.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng.shuffle(images)
    return images


def _unlabelled_link(unl: Path, p: Path) -> None:
    (unl / (hashlib.sha1(str(p).encode()).hexdigest()[:16] + p.suffix.lower())).symlink_to(p.resolve())  # no class name left


def split(cub: Path, root: Path, per_class: int, seed: int, unlabelled_from: str) -> tuple[Path, Path, Path, int, int]:
    """root/val/<class>/ (``per_class`` labelled train images per class), root/unlabelled/ (flat, hashed
    names) and the test folder: with ``unlabelled_from="train"`` the unlabelled images are the rest of
    cub100/train and the test folder all of cub100/test; with ``"test"`` they are half of each
    cub100/test class and root/test/<class>/ holds the other half (images the model never trained on)."""
    val, unl, test = root / "val", root / "unlabelled", root / "test"
    shutil.rmtree(root, ignore_errors=True)
    val.mkdir(parents=True)
    unl.mkdir()
    rng = random.Random(seed)
    n_val = n_unl = 0
    for cls in sorted(p for p in (cub / "train").iterdir() if p.is_dir()):
        images = _images(cls, rng)
        (val / cls.name).mkdir()
        for p in images[:per_class]:
            (val / cls.name / p.name).symlink_to(p.resolve())
            n_val += 1
        if unlabelled_from == "train":
            for p in images[per_class:]:
                _unlabelled_link(unl, p)
                n_unl += 1
    if unlabelled_from == "train":
        return val, unl, cub / "test", n_val, n_unl
    for cls in sorted(p for p in (cub / "test").iterdir() if p.is_dir()):
        images = _images(cls, rng)
        half = len(images) // 2
        (test / cls.name).mkdir(parents=True)
        for p in images[:half]:
            _unlabelled_link(unl, p)
            n_unl += 1
        for p in images[half:]:
            (test / cls.name / p.name).symlink_to(p.resolve())
    return val, unl, test, n_val, n_unl


def run_compress(model: Path, args: list[str], out: Path) -> dict:
    """``edgefg compress MODEL ARGS`` (5 latency iterations, no plot) into ``out``, its log beside it as ``out.log``."""
    return edgefg_compress([model, *args, "--latency-iters", "5", "--no-plot", "--force", "-o", out], out.parent / f"{out.name}.log")


def test_arrays(test: Path, artifact: Path):
    """cub100/test preprocessed as the artifact's manifest says, labels mapped by name."""
    from edgefg.calibration.dataset import iter_batches, scan
    from edgefg.manifest import load_manifest

    manifest = load_manifest(artifact)
    images = scan(test, manifest.labels)
    xs, ys = [], []
    for b in iter_batches(images.samples, manifest.preprocess, 64):
        xs.append(b.x)
        ys.append(b.labels)
    return np.concatenate(xs), np.concatenate(ys), list(manifest.labels)


def score(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnx

    from edgefg.compress.quantize import Runner

    return Runner("openvino", batch=64).logits(onnx.load(str(onnx_path)), x)


def interleaved_latency(paths: list[Path], rounds: int, iters: int, threads: int) -> list[float]:
    """Median over rounds of the mean batch-1 latency (ms); each round runs every model in turn."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = []
    for p in paths:
        m = core.read_model(str(p))
        shape = [1] + [d.get_length() for d in list(m.inputs[0].get_partial_shape())[1:]]
        compiled.append((core.compile_model(m, "CPU", cfg), np.random.default_rng(0).standard_normal(shape).astype(np.float32)))
    for c, x in compiled:
        for _ in range(5):
            c(x)
    times: list[list[float]] = [[] for _ in compiled]
    for _ in range(rounds):
        for k, (c, x) in enumerate(compiled):
            t = time.perf_counter()
            for _ in range(iters):
                c(x)
            times[k].append((time.perf_counter() - t) / iters * 1e3)
    return [float(np.median(t)) for t in times]


def evaluate(name: str, run: dict, artifact: Path, x, y, labels, ref_logits) -> dict:
    from edgefg.compress.agreement import agreement_stats
    from edgefg.validate.metrics import class_drops, classification

    logits = score(artifact / "model.onnx", x)
    m, ref_m = classification(logits, y, labels), classification(ref_logits, y, labels)
    drops = class_drops(m, ref_m)
    a = agreement_stats(logits, ref_logits)
    q = run["report"]["compression"][-1] if run["report"]["compression"] else {}
    reverted = list(q.get("reverted_by_nncf", [])) + list(q.get("float_layers_per_class", []))
    worst = drops[0] if drops else None
    return {
        "variant": name, "command": run["command"], "exit_code": run["exit_code"], "compress_seconds": run["seconds"], "int8_seconds": q.get("seconds"),
        "top1": m["top1"], "top1_drop_pts": 100 * (ref_m["top1"] - m["top1"]), "agreement": a["agreement"], "mean_kl": a["mean_kl"],
        "worst_class": ({k: worst[k] for k in ("class", "images", "drop_pts", "drop_images", "p_value")} if worst else None),
        "layers_reverted": reverted, "float_layers": q.get("float_layers", []),
        "agreement_on_unlabelled": q.get("agreement_with_fp32"), "plain_agreement_on_unlabelled": q.get("plain_int8_agreement_with_fp32"),
        "validation_top1_drop_pts": q.get("top1_drop"), "passed": q.get("passed"), "model_sha256": _sha(artifact / "model.onnx"),
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _secs(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f} s"


def markdown(results: dict) -> str:
    out = []
    for model_name, r in results["models"].items():
        src = ("the rest of cub100/train (the images the model was fitted on)" if r.get("unlabelled_from", "train") == "train"
               else "half of each cub100/test class (new images)")
        scored = (f"all {r['images']['test']} cub100/test images" if r.get("unlabelled_from", "train") == "train"
                  else f"the other {r['images']['test']} cub100/test images")
        out += [f"**{model_name}** — {r['images']['val']} labelled validation images (10 per class, cub100/train); {r['images']['unlabelled']} unlabelled "
                f"images: {src}; scored on {scored}. FP32 top-1 {100 * r['fp32']['top1']:.2f} %. "
                f"Latency: OpenVINO CPU batch 1, {r['latency']['threads']} threads, interleaved ({r['latency']['rounds']} rounds × {r['latency']['iters']}), "
                f"FP32 {r['fp32']['latency_ms']:.2f} ms, on {r['machine']} — a shared, loaded machine: ratios are more reliable than ms, and the wall "
                f"times (INT8 step: quantization + accuracy control; compress: the whole CLI run with its report) include waits for other jobs. "
                f"Goal: agreement ≥ {GOAL_AGREEMENT} with FP32 on the test split at ≥ {GOAL_SPEEDUP}× FP32 speed. Written by `{r['command']}` "
                f"({r['date']}).", ""]
        out += ["| variant | top-1 | Δ top-1 vs FP32 | agreement w/ FP32 (test) | mean KL | worst class (test) | agreement on the unlabelled images (plain → final) "
                "| layers reverted | speed-up | INT8 step | compress wall | goal |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        first: dict[str, str] = {}
        for v in r["variants"]:
            same = first.setdefault(v["model_sha256"], v["variant"]) if v.get("model_sha256") else v["variant"]
            v = {**v, "variant": v["variant"] + (f" (same file as {same})" if same != v["variant"] else "")}
            wc = v["worst_class"]
            worst = f"{wc['class']} −{wc['drop_pts']:.1f} pt ({wc['drop_images']}/{wc['images']})" if wc and wc["drop_pts"] > 0 else "none lost"
            goal = "yes" if v["agreement"] >= GOAL_AGREEMENT and v["speedup"] >= GOAL_SPEEDUP else "no"
            search = (f"{v['plain_agreement_on_unlabelled']:.4f} → {v['agreement_on_unlabelled']:.4f}"
                      if v.get("agreement_on_unlabelled") is not None and v.get("plain_agreement_on_unlabelled") is not None else "–")
            out.append(f"| {v['variant']} | {100 * v['top1']:.2f} % | {-v['top1_drop_pts']:+.2f} pt | {v['agreement']:.4f} | {v['mean_kl']:.4f} | {worst} | {search} | "
                       f"{len(v['layers_reverted'])} | {v['speedup']:.2f}× | {_secs(v.get('int8_seconds'))} | {v['compress_seconds'] / 60:.1f} min | {goal} |")
        if any(first.get(v.get("model_sha256"), v["variant"]) != v["variant"] for v in r["variants"]):
            out += ["", "Rows marked *same file* are byte-identical models: the spread of their speed-ups is the machine's timing noise."]
        out += ["", "Layers reverted to float: " + "; ".join(f"{v['variant']}: {', '.join(v['layers_reverted']) or 'none'}" for v in r["variants"]), ""]
    return "\n".join(out)


def variants(min_agreements: list[float]) -> dict[str, list[str]]:
    """Variant name → CLI arguments after the model ({val}/{unl}: the labelled / unlabelled folders)."""
    lab = ["--data", "{val}", "--val-data", "{val}"]
    out = {
        "plain INT8": lab + ["--recipe", "int8"],
        "accuracy-aware, 10/class labels": lab + ["--recipe", "int8-accuracy"],
    }
    for a in min_agreements:
        out[f"agreement-driven ≥ {a:g}"] = lab + ["--agreement-data", "{unl}", "--min-agreement", str(a)]
    out.update({
        "INT8, full BiasCorrection": lab + ["--bias-correction", "full"],
        "INT8, 1000 calibration images": lab + ["--calib-size", "1000"],
        "INT8, SmoothQuant head (α 0.5)": lab + ["--smooth-quant", "0.5"],
        f"agreement-driven ≥ {min_agreements[0]:g}, full BiasCorrection": lab + ["--agreement-data", "{unl}", "--min-agreement",
                                                                               str(min_agreements[0]), "--bias-correction", "full"],
    })
    return out


QUICK = ("plain INT8", "accuracy-aware", "agreement-driven ≥")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--cub", type=Path, default=CUB)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--unlabelled-from", choices=["train", "test"], default="train",
                    help="train: the rest of cub100/train (images the model was fitted on); test: half of each cub100/test class, "
                         "scored on the other half (new images, as a user's camera frames are)")
    ap.add_argument("--min-agreement", type=float, nargs="+", default=[0.99, 0.998], help="one agreement-driven row each")
    ap.add_argument("--quick", action="store_true", help="only plain / label-driven / agreement-driven (no stronger-option rows)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", type=Path, default=None,
                    help="file holding the agreement-int8 block (default: the one of README.md, docs/**/*.md with its markers)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON to update (the .md beside it too)")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md and the result block from the JSON (file identities "
                                                          "filled in from runs/agreement_int8/<model>/ when the artifacts are there)")
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.results.read_text())
        for model_name, r in results["models"].items():
            for i, v in enumerate(r["variants"]):
                folder = model_name.split(",")[0] + ("" if r.get("unlabelled_from", "train") == "train" else "-test-half")
                onnx_file = RUNS / "agreement_int8" / folder / f"v{i}" / "model.onnx"
                if not v.get("model_sha256") and onnx_file.is_file():
                    v["model_sha256"] = _sha(onnx_file)
        write_json(args.results, results)
        _write_outputs(results, args)
        return
    name = args.model.resolve().name + ("" if args.unlabelled_from == "train" else ", unlabelled = half of test")
    runs = RUNS / "agreement_int8" / (args.model.resolve().name + ("" if args.unlabelled_from == "train" else "-test-half"))
    val, unl, test_dir, n_val, n_unl = split(args.cub, runs / "data", args.per_class, args.seed, args.unlabelled_from)
    print(f"{name}: {n_val} labelled validation images, {n_unl} unlabelled agreement images; CPU: {cpu_model()}", flush=True)

    fp32 = run_compress(args.model, ["--data", str(val), "--val-data", str(val), "--recipe", "fp32"], runs / "fp32")
    x, y, labels = test_arrays(test_dir, runs / "fp32")
    from edgefg.validate.metrics import classification

    ref_logits = score(runs / "fp32" / "model.onnx", x)
    table = variants(args.min_agreement)
    names = [v for v in table if not args.quick or (v.startswith(QUICK) and "BiasCorrection" not in v)]
    rows = []
    for i, v in enumerate(names):
        out = runs / f"v{i}"
        run = run_compress(args.model, [a.format(val=val, unl=unl) for a in table[v]], out)
        rows.append(evaluate(v, run, out, x, y, labels, ref_logits))
        print(f"  {v}: test top-1 {100 * rows[-1]['top1']:.2f} %, agreement {rows[-1]['agreement']:.4f}, "
              f"{len(rows[-1]['layers_reverted'])} layer(s) reverted", flush=True)
    print(f"interleaved latency ({args.rounds} rounds) ...", flush=True)
    lat = interleaved_latency([runs / "fp32" / "model.onnx"] + [runs / f"v{i}" / "model.onnx" for i in range(len(names))], args.rounds, args.iters, args.threads)
    for v, ms in zip(rows, lat[1:]):
        v["latency_ms"], v["speedup"] = ms, lat[0] / ms

    results = json.loads(args.results.read_text()) if args.results.is_file() else {"models": {}}
    cmd = ("python benchmarks/agreement_int8.py" + ("" if args.model.resolve().name == "mobilenetv2_cub100" else f" --model {args.model}")
           + (" --quick" if args.quick else "") + ("" if args.unlabelled_from == "train" else " --unlabelled-from test"))
    results["models"][name] = {
        "command": cmd, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_model(),
        "model_files_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(args.model.iterdir()) if f.is_file()},
        "min_agreements": args.min_agreement, "images": {"val": n_val, "unlabelled": n_unl, "test": int(len(y))},
        "unlabelled_from": args.unlabelled_from,
        "fp32": {"top1": classification(ref_logits, y, labels)["top1"], "latency_ms": lat[0], "compress_seconds": fp32["seconds"]},
        "latency": {"rounds": args.rounds, "iters": args.iters, "threads": args.threads, "backend": "openvino CPU f32 hint, batch 1"},
        "variants": rows,
    }
    write_json(args.results, results)
    _write_outputs(results, args)


def _write_outputs(results: dict, args) -> None:
    md = markdown(results)
    print(md)
    args.results.with_suffix(".md").write_text(md, encoding="utf-8")
    write_block("agreement-int8", md, args.readme)


if __name__ == "__main__":
    main()
