"""Enrolment on real data: remove classes from the trained head, enrol them back from a few images each.

    python benchmarks/enroll_figures.py              # writes results/enroll_figures.json + the enroll-figures block (docs/enroll.md)
    python benchmarks/enroll_figures.py --docs-only  # the block again from that JSON

mobilenetv2_cub100 compressed once per precision (FP32; INT8 by NNCF on 300 stratified cub100/train images),
deployed with ``--embedding`` to intel-cpu (OpenVINO) and rpi5 (LiteRT on this x86 host, a stand-in; its INT8
is PT2E from the FP32 module, calibrated on cub100/train). For each bundle and each k: ``edgefg enroll
--remove C1 … --remove C10 --images DIR`` masks 10 trained classes (drawn with ``--seed``) and enrols them
back by name from k cub100/train images each (``--draws`` random draws of the k images); top-1 on those
classes' cub100/test images and on the other 90 classes', against the trained head of the same bundle.

Cost on 2 cores: the engine's two outputs (scores, embedding) of every test image are computed once per
bundle; each enrolled bundle's scores are its prototype head applied to them — exactly what
``LoadedBundle.scores`` computes — checked against the enrolled bundle itself on ``--check-images`` images.

k = 1 is not run: enrolment calibrates its temperature and bias leave-one-out (each image against its
class prototype built without it), which needs at least 2 images, and the CLI's floor is 3 (a
leave-one-out prototype of at least 2 images). k = 3, 5, 10 instead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # python benchmarks/enroll_figures.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RESULTS, RUNS, TEST, TRAIN, machine_line, usable_cores, write_block, write_json

WORK = RUNS / "enroll"
BUNDLES = (("intel-cpu", "fp32", "OpenVINO"), ("intel-cpu", "int8", "OpenVINO"),
           ("rpi5", "fp32", "LiteRT (x86 stand-in)"), ("rpi5", "int8", "LiteRT (x86 stand-in)"))


def artifacts(calib_size: int, fresh: bool) -> dict[str, Path]:
    """FP32 and INT8 artifacts of mobilenetv2_cub100, compressed once (reused from WORK unless ``fresh``)."""
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.models.loader import load_model

    out: dict[str, Path] = {}
    model = None
    for recipe in ("fp32", "int8"):
        folder = WORK / f"artifact-{recipe}"
        if (folder / "manifest.json").is_file() and not fresh:
            out[recipe] = folder
            continue
        model = model or load_model(MODEL)
        t = time.perf_counter()
        out[recipe] = compress(model, folder, CompressOptions(recipe=recipe, data=TRAIN, calib_size=calib_size, force=True, latency_iters=3)).directory
        print(f"compress {recipe}: {time.perf_counter() - t:.0f} s", flush=True)
    return out


def bundle(arts: dict[str, Path], target: str, precision: str, fresh: bool) -> Path:
    """``edgefg deploy ART --target T --precision P --embedding --data cub100/train`` (reused unless ``fresh``)."""
    from edgefg.deploy import deploy

    folder = WORK / f"bundle-{target}-{precision}"
    if (folder / "manifest.json").is_file() and not fresh:
        return folder
    t = time.perf_counter()
    deploy(arts[precision], target, folder, precision=precision, data=TRAIN, embedding=True, force=True)
    print(f"deploy {target} {precision} --embedding: {time.perf_counter() - t:.0f} s", flush=True)
    return folder


def engine_outputs(folder: Path, samples: list) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's trained-head scores and embeddings of ``samples`` (one pass; its own preprocessing)."""
    from edgefg.calibration.dataset import iter_batches
    from edgefg.runtime.engine.bundle import LoadedBundle

    heads, embs = [], []
    with LoadedBundle(folder) as lb:
        for batch in iter_batches(samples, lb.manifest.preprocess, 32):
            h, e = lb.scores_and_embedding(batch.x)
            heads.append(h)
            embs.append(e)
    return np.concatenate(heads), np.concatenate(embs)


def shots_folder(root: Path, train: dict[str, list[Path]], classes: list[str], k: int, rng: np.random.Generator) -> Path:
    """An ImageFolder of ``k`` cub100/train images (drawn by ``rng``) for each class (symlinks)."""
    shutil.rmtree(root, ignore_errors=True)
    for name in classes:
        (root / name).mkdir(parents=True)
        for src in rng.choice(np.asarray(train[name], dtype=object), size=k, replace=False):
            (root / name / src.name).symlink_to(src)
    return root


def evaluate(folder: Path, head: np.ndarray, emb: np.ndarray, truth: list[str], removed: set[str], samples: list, check: int) -> dict[str, Any]:
    """Top-1 of the enrolled bundle on the removed classes' and the other classes' test images."""
    from edgefg.calibration.dataset import iter_batches
    from edgefg.manifest import load_manifest
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.runtime.engine.prototypes import PrototypeHead

    m = load_manifest(folder)
    scores = PrototypeHead(folder, m).combine(head, emb)
    pred = [m.labels[i] for i in scores.argmax(1)]
    with LoadedBundle(folder) as lb:  # the shortcut is what the bundle computes: checked on the first images
        direct = np.concatenate([lb.scores(b.x) for b in iter_batches(samples[:check], m.preprocess, 32)])
    diff = float(np.abs(direct - scores[:check]).max())
    if diff > 1e-3:
        raise SystemExit(f"{folder.name}: prototype scores from the cached outputs differ from the bundle's by {diff:.3g}")
    hit = np.asarray([p == t for p, t in zip(pred, truth)])
    new = np.asarray([t in removed for t in truth])
    into_new = np.asarray([p in removed for p in pred])
    fit = m.prototypes["fit"]
    return {"top1_enrolled": float(hit[new].mean()), "top1_others": float(hit[~new].mean()),
            "others_called_enrolled": float(into_new[~new].mean()), "check_max_abs": diff,
            "temperature": fit["temperature"], "bias": fit["bias"], "loo_top1": fit["loo_top1"], "reference_kept": fit.get("reference_kept")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", default="3,5,10", help="k: images per enrolled class (comma-separated; at least 3: see the module doc)")
    ap.add_argument("--classes", type=int, default=10, help="trained classes removed and enrolled back")
    ap.add_argument("--draws", type=int, default=3, help="random draws of the k enrolment images per k (figures: mean, min-max)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-size", type=int, default=300)
    ap.add_argument("--check-images", type=int, default=64, help="test images on which the enrolled bundle itself is run")
    ap.add_argument("--targets", default="intel-cpu,rpi5")
    ap.add_argument("--fresh", action="store_true", help="compress and deploy again instead of reusing runs/enroll")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the result block")
    ap.add_argument("--docs-only", action="store_true", help="only rewrite the result block from results/enroll_figures.json")
    args = ap.parse_args()
    if args.docs_only:
        import json

        write_block("enroll-figures", markdown(json.loads((RESULTS / "enroll_figures.json").read_text(encoding="utf-8"))))
        return 0
    os.environ.setdefault("EDGEFG_QUIET", "1")
    shots = [int(s) for s in args.shots.split(",")]
    if not MODEL.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    if min(shots) < 3:
        print("--shots: enrolment needs at least 3 images per class (leave-one-out calibration; see the module doc)", file=sys.stderr)
        return 2
    from edgefg.calibration.dataset import scan
    from edgefg.enroll import enroll
    from edgefg.manifest import load_manifest

    t0 = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    arts = artifacts(args.calib_size, args.fresh)
    labels = load_manifest(arts["fp32"]).labels
    rng = np.random.default_rng(args.seed)
    removed = sorted(str(c) for c in rng.choice(labels, size=args.classes, replace=False))
    train_scan = scan(TRAIN, labels)
    train: dict[str, list[Path]] = {}
    for s in train_scan.samples:
        train.setdefault(labels[s.label], []).append(s.path)
    test = scan(TEST, labels).samples  # mapped by name: the folders' sorted order is not the model's
    truth = [labels[s.label] for s in test]
    rows: list[dict[str, Any]] = []
    targets = args.targets.split(",")
    for target, precision, engine in (b for b in BUNDLES if b[0] in targets):
        folder = bundle(arts, target, precision, args.fresh)
        m = load_manifest(folder)
        t = time.perf_counter()
        head, emb = engine_outputs(folder, test)
        hit = np.asarray([labels[i] == lab for i, lab in zip(head.argmax(1), truth)])
        new = np.asarray([lab in removed for lab in truth])
        base = {"target": target, "precision": precision, "engine": engine, "embedding_parity": m.parity["embedding"],
                "trained_top1_enrolled": float(hit[new].mean()), "trained_top1_others": float(hit[~new].mean()),
                "test_pass_s": round(time.perf_counter() - t, 1)}
        print(f"{target} {precision}: trained head {base['trained_top1_enrolled']:.4f} on the {args.classes}, "
              f"{base['trained_top1_others']:.4f} on the others ({base['test_pass_s']} s)", flush=True)
        for k in shots:
            draws = []
            for d in range(args.draws):
                images = shots_folder(WORK / "shots", train, removed, k, np.random.default_rng([args.seed, k, d]))
                out = WORK / f"enrolled-{target}-{precision}"
                remove_args = tuple(removed)
                te = time.perf_counter()
                enroll(folder, out, images=images, remove=remove_args, force=True)
                seconds = time.perf_counter() - te
                r = evaluate(out, head, emb, truth, set(removed), test, args.check_images)
                draws.append({**r, "enroll_s": round(seconds, 2)})
                print(f"  k={k} draw {d}: enrolled {r['top1_enrolled']:.4f}, others {r['top1_others']:.4f} "
                      f"(T {r['temperature']:.3g}, b {r['bias']:.3g}; enrol {seconds:.1f} s)", flush=True)
            rows.append({**base, "k": k, "draws": draws,
                         **{f"{key}_mean": float(np.mean([d[key] for d in draws])) for key in ("top1_enrolled", "top1_others", "others_called_enrolled")},
                         **{f"{key}_min": float(np.min([d[key] for d in draws])) for key in ("top1_enrolled", "top1_others")},
                         **{f"{key}_max": float(np.max([d[key] for d in draws])) for key in ("top1_enrolled", "top1_others")}})
    result = {"machine": machine_line(usable_cores()), "model": "mobilenetv2_cub100", "removed_classes": removed,
              "test_images": len(test), "test_images_enrolled": int(sum(t in removed for t in truth)), "shots": shots, "draws": args.draws,
              "seed": args.seed, "calibration": f"cub100/train, {args.calib_size} images stratified", "rows": rows,
              "command": "python benchmarks/enroll_figures.py" + ("" if args.shots == "3,5,10" else f" --shots {args.shots}"),
              "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(RESULTS / "enroll_figures.json", result)
    md = markdown(result)
    print(md)
    if not args.no_docs and args.targets == "intel-cpu,rpi5":
        write_block("enroll-figures", md)
    return 0


def markdown(r: dict[str, Any]) -> str:
    """The enroll-figures block: one row per bundle and k."""
    lines = [f"Measured on {r['machine']} by `{r['command']}` ({r['wall_s'] / 60:.0f} min). `mobilenetv2_cub100`; "
             f"{len(r['removed_classes'])} classes masked in the trained head and enrolled back by name "
             f"({', '.join(c.replace('_', ' ') for c in r['removed_classes'])}); cub100/test: {r['test_images_enrolled']} images of those "
             f"classes, {r['test_images'] - r['test_images_enrolled']} of the other 90. Enrolment images: k per class from cub100/train, "
             f"{r['draws']} random draws per k (mean, min–max).", "",
             "| bundle | k | top-1 enrolled 10 (trained head) | top-1 other 90 (trained head) | other 90 called an enrolled class | embedding parity (cos min) |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(
            f"| {row['target']} {row['precision'].upper()} ({row['engine']}) | {row['k']} "
            f"| {row['top1_enrolled_mean']:.4f} ({row['top1_enrolled_min']:.4f}–{row['top1_enrolled_max']:.4f}) vs {row['trained_top1_enrolled']:.4f} "
            f"| {row['top1_others_mean']:.4f} ({row['top1_others_min']:.4f}–{row['top1_others_max']:.4f}) vs {row['trained_top1_others']:.4f} "
            f"| {row['others_called_enrolled_mean']:.4f} | {row['embedding_parity']['cosine_min']:.4f} |")
    lines += ["", "- trained head: the same bundle before enrolment, all 100 classes in its linear head.",
              "- k = 1 is not measured: the temperature and bias are fitted leave-one-out, which needs ≥ 2 images a class "
              "(the CLI asks for 3, so that each held-out image meets a prototype of ≥ 2).",
              "- rpi5 rows: LiteRT with XNNPACK on this x86 host, a stand-in for the Raspberry Pi 5.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
