"""Collect on the device (issue #24): what `edgefg run --collect` keeps, what it costs, and what the kept
frames are worth as agreement data for INT8.

    python benchmarks/field_collect.py [--rounds 5] [--skip-agreement | --agreement-only | --docs-only] [--min-agreement 0.99 0.995] [--docs]

Data: cub100/test replayed as two cameras — the class folders split in two (sorted; the first half is
camera ``a``, the rest ``b``), each an image-folder source read in order, so consecutive frames are mostly
one species, as a sighting is. Bundle: mobilenetv2_cub100 compressed to plain INT8 (calibrated on 10
labelled train images per class, the user's situation of benchmarks/agreement_int8.py) and deployed for
intel-cpu (OpenVINO); cached under runs/field-collect/.

1. Throughput: the same two-camera run (``--min-confidence 0.5``, so the ``novel`` policy has open-set
   rejections to see) without ``--collect``, with ``--collect DIR --collect-per-hour 0`` (default policies
   and thresholds, every chosen frame written: the worst case) and with ``--collect DIR`` at its defaults
   (120 frames per camera per hour), interleaved round by round on one machine; FPS, p95 of the ``total``
   latency (preprocess + infer + postprocess, per frame) and of ``end_to_end`` (capture → result) from the
   JSON lines, as ratios to the run without in the same round (median over rounds, with min–max). Frames
   collected per policy. The replay runs as fast as the CPU allows (no frame-rate cap): the cores are
   saturated, which is the hard case for a writer thread.
2. Agreement-driven INT8 (``edgefg compress --agreement-data DIR --min-agreement A``): the frames the
   first unlimited collecting run kept are split at random in two halves; half 1 (a collect folder:
   crops/, .frames/, .meta/) drives the agreement, vs as many unlabelled train images, vs plain INT8.
   Scored (top-1 agreement with the FP32 model, top-1) on the cub100/test frames that were NOT collected,
   and on the original images of half 2 (hard frames no variant saw). Compress runs are cached under
   runs/field-collect/ (reused when the arguments and the agreement images are the same).

Prints a table (with the CPU model) and writes benchmarks/out/field_collect.json; with --docs (or --docs-only, from
that JSON) also the field-collect block of docs/field-loop.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # python benchmarks/field_collect.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.agreement_int8 import evaluate, interleaved_latency, run_compress, score, split, test_arrays  # the agreement benchmark's helpers
from benchmarks.common import CUB, MODEL, REPO, machine_line, rel, usable_cores, write_block, write_json
from benchmarks.common import OUT as OUT_DIR
from benchmarks.common import RUNS as RUNS_DIR

RUNS = RUNS_DIR / "field-collect"
OUT = OUT_DIR / "field_collect.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cameras(test: Path, root: Path) -> dict[str, Path]:
    """root/a/<class>/… and root/b/<class>/… (links): the test class folders split in two."""
    classes = sorted(p for p in test.iterdir() if p.is_dir())
    half = len(classes) // 2
    out = {}
    for name, part in (("a", classes[:half]), ("b", classes[half:])):
        cam = root / name
        if not cam.is_dir():
            for cls in part:
                (cam / cls.name).mkdir(parents=True)
                for img in sorted(cls.iterdir()):
                    if img.suffix.lower() in IMAGE_SUFFIXES:
                        (cam / cls.name / img.name).symlink_to(img.resolve())
        out[name] = cam
    return out


def source_order(folder: Path) -> list[Path]:
    """The frames of an image-folder source in the order edgefg run reads them (frame index → file)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def bundle(model: Path, val: Path) -> tuple[Path, Path, dict, dict]:
    """FP32 and plain INT8 artifacts (compress, cached) and the INT8 intel-cpu bundle (deploy, cached)."""
    runs = {}
    for name, args in (("fp32", ["--recipe", "fp32"]), ("int8", ["--recipe", "int8"])):
        out = RUNS / name
        if (out / "report.json").is_file() and (RUNS / f"{name}.run.json").is_file():
            runs[name] = json.loads((RUNS / f"{name}.run.json").read_text())
            print(f"cached {out}")
        else:
            runs[name] = run_compress(model, ["--data", str(val), "--val-data", str(val), "--val-size", "300", *args], out)
            (RUNS / f"{name}.run.json").write_text(json.dumps(runs[name], default=str))
    bun = RUNS / "bundle-int8-intel-cpu"
    if not (bun / "manifest.json").is_file():
        from edgefg.deploy import deploy

        deploy(RUNS / "int8", "intel-cpu", bun, force=True)
    return RUNS / "fp32", bun, runs["fp32"], runs["int8"]


def one_run(bun: Path, cams: dict[str, Path], out: Path, collect: Path | None, per_hour: float = 0) -> dict:
    from edgefg.runtime.capture.cameras import CameraConfig
    from edgefg.runtime.outputs.collect import CollectOptions
    from edgefg.runtime.serve import RunOptions, run_cameras

    if collect is not None:
        shutil.rmtree(collect, ignore_errors=True)
    import resource

    events: list[dict] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    opts = RunOptions(output=out, min_confidence=0.5, on_event=events.append,
                      outputs={"collect": CollectOptions(collect, per_hour=per_hour, seed=0)} if collect is not None else {})
    summary = run_cameras(bun, [CameraConfig(n, str(p)) for n, p in cams.items()], opts, handle_signals=False)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # every thread of this process: capture, inference, writer
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    total = np.array([r["latency_ms"]["total"] for r in lines])
    e2e = np.array([r["latency_ms"]["end_to_end"] for r in lines])
    row = {"collect": collect is not None, "per_hour": per_hour if collect is not None else None, "frames": summary["frames"], "seconds": round(summary["seconds"], 2), "fps": round(summary["fps"], 2),
           "total_p50_ms": round(float(np.percentile(total, 50)), 3), "total_p95_ms": round(float(np.percentile(total, 95)), 3),
           "end_to_end_p95_ms": round(float(np.percentile(e2e, 95)), 3), "cpu_ms_per_frame": round(1e3 * cpu_s / max(1, summary["frames"]), 3), "unknown": summary["unknown"],
           "events": {k: v for k, v in summary["events"].items() if k in ("collect_error", "sink_error")}}
    if collect is not None:
        c = summary["collect"]
        row["collected"] = {k: c[k] for k in ("kept", "by_policy", "dropped", "errors", "bytes", "files")}
        row["collected"]["per_camera"] = {cam: v["kept"] for cam, v in c["cameras"].items()}
    return row


def collected_files(collect: Path, cams: dict[str, Path]) -> set[Path]:
    """The test images the collecting run kept, from the sidecars' (camera, frame index)."""
    order = {n: source_order(p) for n, p in cams.items()}
    kept = set()
    for meta in (collect / ".meta").rglob("*.json"):
        m = json.loads(meta.read_text())
        path = order[m["camera"]][m["frame"]]
        assert path.name == m["source"], (path, m["source"])  # the index maps to the file the run read
        kept.add(path.resolve())
    return kept


def cached_compress(model: Path, cli_args: list[str], out: Path, key: dict) -> dict:
    """run_compress, reused when ``out`` was written by the same arguments on the same agreement images."""
    stamp = out.parent / f"{out.name}.run.json"
    if (out / "report.json").is_file() and stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key:
            print(f"cached {out}")
            return saved["run"]
    run = run_compress(model, cli_args, out)
    stamp.write_text(json.dumps({"key": key, "run": run}, default=str))
    return run


def agreement(args, cams: dict[str, Path], data: Path, fp32: Path, fp32_run: dict, int8_run: dict) -> dict:
    """Agreement-driven INT8 from collected frames vs from unlabelled train images vs plain INT8.

    The first unlimited collecting run's frames are split at random in two halves: the first drives
    ``--agreement-data`` (copied as a collect folder: crops/, .frames/, .meta/), the second is scored
    (hard frames no variant saw), as are the cub100/test frames that were not collected at all."""
    from edgefg.validate.metrics import classification

    collect_dir = data / "agreement-source"  # a frozen copy of the first unlimited run's folder: later throughput runs leave it alone
    if not (collect_dir / ".meta").is_dir():
        if not (RUNS / "collected-unlimited-0" / ".meta").is_dir():
            raise SystemExit("no collected frames yet: run the throughput phase first (without --agreement-only)")
        shutil.copytree(RUNS / "collected-unlimited-0", collect_dir)
    order = {n: source_order(p) for n, p in cams.items()}
    metas = sorted((json.loads(m.read_text()) for m in (collect_dir / ".meta").rglob("*.json")), key=lambda m: m["id"])
    for m in metas:
        m["original"] = order[m["camera"]][m["frame"]].resolve()
        assert m["original"].name == m["source"], (m["original"], m["source"])  # the index maps to the file the run read
    random.Random(0).shuffle(metas)
    drive_metas, hard_metas = metas[: len(metas) // 2], metas[len(metas) // 2 :]
    drive = data / "collected-drive"  # half of the collect folder, as rsync would copy it
    shutil.rmtree(drive, ignore_errors=True)
    for m in drive_metas:
        for part in (m["files"]["crop"], m["files"]["frame"], m["files"]["crop"].replace("crops/", ".meta/", 1)[:-4] + ".json"):
            (drive / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(collect_dir / part, drive / part)
    kept = {m["original"] for m in metas}
    hard_set = {m["original"] for m in hard_metas}
    held, hard = data / "not-collected", data / "collected-held-out"
    for d in (held, hard):
        shutil.rmtree(d, ignore_errors=True)
    for cls in sorted(p for p in (args.cub / "test").iterdir() if p.is_dir()):
        for img in sorted(cls.iterdir()):
            r = img.resolve()
            d = held if r not in kept else hard if r in hard_set else None
            if img.suffix.lower() in IMAGE_SUFFIXES and d is not None:
                (d / cls.name).mkdir(parents=True, exist_ok=True)
                (d / cls.name / img.name).symlink_to(r)
    same = data / "unlabelled-same-size"  # as many unlabelled train images as drive crops
    shutil.rmtree(same, ignore_errors=True)
    same.mkdir()
    pool = sorted((data / "unlabelled").iterdir())
    for p in random.Random(0).sample(pool, min(len(drive_metas), len(pool))):
        (same / p.name).symlink_to(p.resolve())
    n_same = len(list(same.iterdir()))
    x, y, labels = test_arrays(held, fp32)
    ref = score(fp32 / "model.onnx", x)
    hx, hy, _ = test_arrays(hard, fp32)
    hard_ref = score(fp32 / "model.onnx", hx)
    lab = ["--data", str(data / "val"), "--val-data", str(data / "val"), "--val-size", "300"]
    variants = [("plain INT8", None, None)]
    for a in args.min_agreement:
        variants += [(f"agreement ≥ {a:g}, {len(drive_metas)} collected frames", drive, a),
                     (f"agreement ≥ {a:g}, {n_same} unlabelled train images", same, a)]
    rows = []
    for i, (name, folder, a) in enumerate(variants):
        if folder is None:
            run, out = int8_run, RUNS / "int8"
        else:
            out = RUNS / f"agreement-{i}"
            cli_args = [*lab, "--recipe", "int8", "--agreement-data", str(folder), "--min-agreement", str(a)]
            run = cached_compress(args.model, cli_args, out, {"args": cli_args, "images": sorted(p.name for p in folder.rglob("*.jpg"))})
        rows.append(evaluate(name, run, out, x, y, labels, ref))
        h = evaluate(name, run, out, hx, hy, labels, hard_ref)
        rows[-1]["collected_held_out"] = {"agreement": h["agreement"], "top1": h["top1"], "mean_kl": h["mean_kl"]}
        print(f"  {name}: not-collected agreement {rows[-1]['agreement']:.4f}; held-out collected {h['agreement']:.4f}; "
              f"{len(rows[-1]['layers_reverted'])} layer(s) reverted", flush=True)
    outs = [RUNS / "int8" if folder is None else RUNS / f"agreement-{i}" for i, (_, folder, _) in enumerate(variants)]
    lat = interleaved_latency([fp32 / "model.onnx"] + [o / "model.onnx" for o in outs], 15, 10, 2)  # OpenVINO CPU batch 1, interleaved
    for v, ms in zip(rows, lat[1:]):
        v["latency_ms"], v["speedup_vs_fp32"] = round(ms, 3), round(lat[0] / ms, 3)
    res = {"collected_frames": len(metas), "fp32_latency_ms": round(lat[0], 3), "latency": "OpenVINO CPU, batch 1, 2 threads, 15 interleaved rounds × 10", "drive_frames": len(drive_metas), "collected_held_out_frames": len(hard_metas),
           "not_collected_frames": int(len(y)), "fp32_top1_not_collected": classification(ref, y, labels)["top1"],
           "fp32_top1_collected_held_out": classification(hard_ref, hy, labels)["top1"], "fp32_command": fp32_run["command"], "variants": rows}
    print(f"\nAgreement-driven INT8 (agreement = top-1 agreement with the FP32 model). Scored on the {res['not_collected_frames']} cub100/test frames "
          f"NOT collected (FP32 top-1 {100 * res['fp32_top1_not_collected']:.2f} %) and on the {len(hard_metas)} collected frames of the half no variant saw "
          f"(FP32 top-1 {100 * res['fp32_top1_collected_held_out']:.2f} %)")
    print(f"{'variant':<50}{'not collected':>14}{'top-1':>9}{'collected, held out':>21}{'reverted':>9}{'on its data':>13}{'speed-up':>10}  compress")
    for v in rows:
        search = f"{v['agreement_on_unlabelled']:.4f}" if v.get("agreement_on_unlabelled") is not None else "–"
        print(f"{v['variant']:<50}{v['agreement']:>14.4f}{100 * v['top1']:>8.2f}%{v['collected_held_out']['agreement']:>21.4f}"
              f"{len(v['layers_reverted']):>9}{search:>13}{v['speedup_vs_fp32']:>9.2f}×  {v['compress_seconds'] / 60:.1f} min: {v['command']}")
    return res


def throughput(bun: Path, cams: dict[str, Path], rounds: int) -> dict:
    """The run without / with --collect (unlimited) / with --collect (defaults), interleaved round by round."""
    from edgefg.runtime.outputs.collect import DEFAULT_PER_HOUR

    configs = [("without", None, 0), ("collect, no hourly limit", "unlimited", 0), (f"collect, defaults ({DEFAULT_PER_HOUR}/h)", "defaults", DEFAULT_PER_HOUR)]
    rows = []
    for r in range(rounds):
        for name, tag, per_hour in configs:
            row = one_run(bun, cams, RUNS / f"run-{r}-{tag or 'off'}.jsonl", RUNS / f"collected-{tag}-{r}" if tag else None, per_hour)
            row["config"], row["round"] = name, r
            rows.append(row)
            if tag and r > 0:  # round 0's folders are kept
                shutil.rmtree(RUNS / f"collected-{tag}-{r}", ignore_errors=True)
            c = row.get("collected")
            print(f"round {r} {name}: {row['fps']:.1f} FPS, {row['cpu_ms_per_frame']:.2f} CPU ms/frame, total p95 {row['total_p95_ms']:.2f} ms, "
                  f"end-to-end p95 {row['end_to_end_p95_ms']:.2f} ms" + (f", kept {c['kept']} {c['by_policy']} dropped {c['dropped']}" if c else ""), flush=True)

    def per_round(name, k):  # the ratio to the run without in the same round (a shared machine's load drifts between rounds)
        base = [r[k] for r in rows if r["config"] == "without"]
        return [r[k] / b for r, b in zip([r for r in rows if r["config"] == name], base)]

    keys = ("fps", "cpu_ms_per_frame", "total_p95_ms", "end_to_end_p95_ms")
    ratios = {name: {k: {"median": round(float(np.median(per_round(name, k))), 4), "min": round(min(per_round(name, k)), 4),
                         "max": round(max(per_round(name, k)), 4)} for k in keys} for name, _, _ in configs[1:]}
    print(f"\n{'run':<30}{'FPS':>8}{'CPU ms/fr':>10}{'total p50':>11}{'total p95':>11}{'e2e p95':>10}  collected (per policy; a frame may count for several)")
    for r in rows:
        c = r.get("collected")
        print(f"{r['config']:<30}{r['fps']:>8.1f}{r['cpu_ms_per_frame']:>10.2f}{r['total_p50_ms']:>11.2f}{r['total_p95_ms']:>11.2f}{r['end_to_end_p95_ms']:>10.1f}  "
              + (f"{c['kept']} kept: {c['by_policy']}, dropped {c['dropped']}, {c['bytes'] / 1e6:.1f} MB" if c else ""))
    for name, v in ratios.items():
        print(f"{name} / without, median of {rounds} per-round ratios [min–max]: "
              + ", ".join(f"{label} {v[k]['median']:.3f} [{v[k]['min']:.3f}–{v[k]['max']:.3f}]" for k, label in
                          (("fps", "FPS"), ("cpu_ms_per_frame", "CPU/frame"), ("total_p95_ms", "total p95"), ("end_to_end_p95_ms", "end-to-end p95"))))
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_after": os.getloadavg(),
            "run": "run_cameras(bundle, [a, b], RunOptions(min_confidence=0.5, output=…, outputs={'collect': CollectOptions(DIR, per_hour=…, seed=0)}))"
                   " = edgefg run BUNDLE --source a=A --source b=B --min-confidence 0.5 --output OUT.jsonl [--collect DIR [--collect-per-hour 0]]",
            "runs": rows, "ratios_to_without": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--cub", type=Path, default=CUB)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the throughput runs (each: off, unlimited, defaults)")
    ap.add_argument("--min-agreement", type=float, nargs="+", default=[0.99, 0.995], help="one agreement-driven row per value and data")
    phase = ap.add_mutually_exclusive_group()
    phase.add_argument("--skip-agreement", action="store_true", help="only the throughput runs (the JSON keeps its agreement section)")
    phase.add_argument("--agreement-only", action="store_true", help="only the agreement runs (the JSON keeps its throughput section)")
    ap.add_argument("--json", type=Path, default=OUT)
    ap.add_argument("--docs", action="store_true", help="also write the field-collect block of docs/field-loop.md")
    phase.add_argument("--docs-only", action="store_true", help="only re-write the docs block from the JSON the last runs left")
    args = ap.parse_args()
    if args.docs_only:
        write_docs(json.loads(args.json.read_text(encoding="utf-8")))
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    machine = machine_line(usable_cores())
    print(f"CPU: {machine}", flush=True)
    data = RUNS / "data"
    if not (data / "val").is_dir():
        split(args.cub, data, 10, 0, "train")  # val/ = 10 labelled train images per class, unlabelled/ = the rest of train (flat)
    cams = cameras(args.cub / "test", data / "cameras")
    fp32, bun, fp32_run, int8_run = bundle(args.model, data / "val")
    result = json.loads(args.json.read_text()) if args.json.is_file() else {}
    result.update({"machine": machine, "bundle": str(bun.relative_to(REPO)), "cameras": {n: len(source_order(p)) for n, p in cams.items()},
                   "commands": {**result.get("commands", {})}})
    command = "python benchmarks/field_collect.py " + " ".join(sys.argv[1:])
    if not args.agreement_only:
        result["throughput"] = throughput(bun, cams, args.rounds)
        result["commands"]["throughput"] = command
    if not args.skip_agreement:
        result["agreement"] = agreement(args, cams, data, fp32, fp32_run, int8_run)
        result["agreement"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result["commands"]["agreement"] = command
    write_json(args.json, result)
    print(f"wrote {rel(args.json)}")
    if args.docs:
        write_docs(result)


def write_docs(result: dict) -> None:
    write_block("field-collect", docs_table(result))


def docs_table(r: dict) -> str:
    """Markdown for docs/field-loop.md: the throughput ratios and the agreement-driven INT8 rows."""
    lines = []
    t = r.get("throughput")
    if t:
        rounds = len({x["round"] for x in t["runs"]})
        lines += [f"`{r['commands']['throughput']}` on {r['machine']}, {t['date']}; bundle: mobilenetv2_cub100 plain INT8, intel-cpu "
                  f"(OpenVINO); cub100/test replayed as two cameras ({', '.join(f'{k}: {v} frames' for k, v in r['cameras'].items())}), "
                  "uncapped frame rate (the cores saturated).", "",
                  f"Ratios to the run without `--collect` in the same round, median of {rounds} rounds [min–max]:", "",
                  "| run | frames kept (per policy; a frame may count for several) | dropped busy | FPS | CPU ms/frame | total p95 | end-to-end p95 |",
                  "|---|---|---|---|---|---|---|"]
        for name, v in t["ratios_to_without"].items():
            kept = [x["collected"] for x in t["runs"] if x["config"] == name]
            c = kept[0]
            cell = lambda k: f"{v[k]['median']:.2f} [{v[k]['min']:.2f}–{v[k]['max']:.2f}]"
            lines.append(f"| {name} | {c['kept']} ({', '.join(f'{p} {n}' for p, n in c['by_policy'].items())}), {c['bytes'] / 1e6:.1f} MB "
                         f"| {max(x['dropped']['busy'] for x in kept)} | {cell('fps')} | {cell('cpu_ms_per_frame')} | {cell('total_p95_ms')} | {cell('end_to_end_p95_ms')} |")
    a = r.get("agreement")
    if a:
        lines += ["", f"`{r['commands']['agreement']}` on {r['machine']}, {a['date']}: the {a['collected_frames']} frames the first unlimited run "
                      f"kept, split at random: {a['drive_frames']} drive `edgefg compress --agreement-data`, the other {a['collected_held_out_frames']} "
                      f"are scored (hard frames no variant saw), with the {a['not_collected_frames']} frames not collected. "
                      f"FP32 top-1: {a['fp32_top1_not_collected']:.3f} on the frames not collected, {a['fp32_top1_collected_held_out']:.3f} on the "
                      f"held-out collected ones. Latency: {a['latency']}; FP32 {a['fp32_latency_ms']} ms.", "",
                  "| variant | agreement with FP32, held-out collected | top-1, held-out collected | agreement, not collected | layers kept in float | speed-up vs FP32 | compress time |",
                  "|---|---|---|---|---|---|---|"]
        for v in a["variants"]:
            h = v["collected_held_out"]
            lines.append(f"| {v['variant']} | {h['agreement']:.3f} | {h['top1']:.3f} | {v['agreement']:.3f} | {len(v['layers_reverted'])} "
                         f"| {v['speedup_vs_fp32']:.2f}× | {v['compress_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
