"""Validation at scale: peak RSS and images/s of ``edgefg validate`` over N images, N up to 100k.

    python benchmarks/validate_scale.py                              # 2,903 / 25,000 / 100,000 images
    python benchmarks/validate_scale.py --sizes 2903,10000,25000     # a shorter run
    python benchmarks/validate_scale.py --sizes 2903,10000 --ray local   # also sharded over Ray actors
    python benchmarks/validate_scale.py --ray local --ray-sizes 2903,25000   # Ray at the smaller sizes only

The image sets are ImageFolders of hard links to cub100/test (symlinks where the work folder is on
another file system), copy k of each file named ``<stem>~<k>``; so every size has all 100 classes and
costs no disk. The bundle is mobilenetv2_cub100 deployed FP32 for intel-cpu (OpenVINO), built once
in the work folder (or ``--bundle``). Each size runs in a child process of its own: a 64-image
validate gives the base (its peak RSS: the bundle opened, decoder and runtime loaded, one window of
images), then the full validate gives the peak (the kernel's high-water mark VmHWM, reset before
each, so nothing is missed between samples); growth = peak − base, what N − 64 more images cost.

The contract it shows: validation streams images from disk, so the peak grows with N only by the
per-image results (N × classes float32 scores, labels, paths), never by the images (their JPEG
bytes, let alone decoded inputs). With ``--ray`` the driver is measured the same way (it packs
chunks lazily, two per actor in flight) and the JSON is checked to be identical to in-process.
Writes results/validate_scale.json; the table is in docs/validate-scale.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # python benchmarks/validate_scale.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import MODEL, RESULTS, RUNS, TEST, TRAIN, machine_info, write_json

OUT = RESULTS / "validate_scale.json"
WARMUP_IMAGES = 64


def build_bundle(work: Path) -> Path:
    """mobilenetv2_cub100 → FP32 artifact → intel-cpu bundle in ``work`` (reused when there)."""
    bundle = work / "bundle"
    if (bundle / "manifest.json").is_file():
        return bundle
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.models.loader import load_model

    print(f"building the bundle in {bundle} (compress fp32 + deploy intel-cpu)", flush=True)
    opts = CompressOptions(recipe="fp32", data=TRAIN, val_data=TEST, val_size=100, calib_size=32, force=True, latency_iters=3)
    art = compress(load_model(MODEL), work / "art-fp32", opts).directory
    return deploy(art, "intel-cpu", bundle, precision="fp32", force=True, data=TRAIN).directory


def link_images(n: int, work: Path) -> tuple[Path, str]:
    """An ImageFolder of ``n`` links to cub100/test (copy k of a file: ``<stem>~<k>``); returns it and
    the link kind. Reused when a complete one of this size is there."""
    folder = work / f"images-{n}"
    done = folder / ".complete"
    if done.is_file():
        return folder, done.read_text().strip()
    base = sorted(p for p in TEST.rglob("*") if p.is_file() and p.suffix.lower() == ".jpg")
    if not base:
        raise SystemExit(f"no JPEGs in {TEST} (set EDGEFG_DATA)")
    kind = "hard links"
    for i in range(n):
        src = base[i % len(base)]
        dst = folder / src.parent.name / f"{src.stem}~{i // len(base):03d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            continue
        if kind == "hard links":
            try:
                os.link(src, dst)
                continue
            except OSError:  # another file system (or no hard links there)
                kind = "symlinks"
                print(f"note: os.link failed in {folder}; using symlinks instead", flush=True)
        os.symlink(src, dst)
    done.write_text(kind)
    return folder, kind


def jpeg_mb(folder: Path) -> float:
    """What the set's files weigh: the least a run that read every image into memory would hold."""
    return sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 1e6


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident memory now."""
    now = _status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Restart the peak-RSS count (Linux: VmHWM); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process image: VmHWM (Linux), which, unlike getrusage's maxrss,
    does not carry the parent's peak over the fork + exec."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(bundle: Path, data: Path, batch_size: int, ray: str | None, workers: int | None) -> dict:
    """One measurement in this (fresh) process: base RSS after a warm-up, then the full run."""
    from edgefg.validate.api import validate

    scorer = None
    if ray:
        from edgefg.distributed.cluster import connect
        from edgefg.distributed.validate import RayScorer

        connect(ray)  # Ray's start-up is not part of the timing
        scorer = RayScorer(ray, workers)
    peak_reset = reset_peak()  # else the warm-up's peak would include the imports'
    validate(bundle, data, batch_size=batch_size, max_images=WARMUP_IMAGES, scorer=scorer)
    base, resting = peak_rss_mb(), rss_mb()
    peak_reset = reset_peak() and peak_reset  # the full run's peak is its own
    t0 = time.perf_counter()
    res = validate(bundle, data, batch_size=batch_size, scorer=scorer)
    wall = time.perf_counter() - t0
    report = json.dumps(res, indent=2, default=str)
    from edgefg.runtime.engine.bundle import LoadedBundle

    with LoadedBundle(bundle) as b:
        classes = len(b.labels)
    return {"images": res["images"], "skipped": res["skipped_corrupt"], "top1": res["top1"], "wall_s": wall, "images_per_s": res["images"] / wall,
            "rss_base_mb": base, "rss_resting_mb": resting, "rss_peak_mb": peak_rss_mb(), "peak_reset": peak_reset, "scores_mb": res["images"] * classes * 4 / 1e6, "classes": classes,
            "report_sha256": hashlib.sha256(report.encode()).hexdigest()}


def measure(bundle: Path, data: Path, batch_size: int, ray: str | None, workers: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--data", str(data), "--batch-size", str(batch_size)]
    cmd += ["--ray", ray] if ray else []
    cmd += ["--workers", str(workers)] if workers else []
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "EDGEFG_QUIET": "1", "RAY_USAGE_STATS_ENABLED": "0"})
    if r.returncode != 0:
        raise SystemExit(f"validate on {data} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"CPU: {s['cpu']} ({s['cores']} cores); bundle: {s['bundle_kind']}; batch {s['batch_size']}; images: {s['links']} to cub100/test "
             f"({result['created']}).", "",
             "| mode | images | wall s | images/s | base RSS MB (64 images) | peak RSS MB | growth MB | growth KB/image | scores MB (N×classes float32) | JPEG MB of the set | JSON = in-process |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["runs"]:
        growth = r["rss_peak_mb"] - r["rss_base_mb"]
        same = "—" if r["mode"] == "in-process" else ("yes" if r.get("identical_to_in_process") else "NO")
        lines.append(f"| {r['mode']} | {r['images']:,} | {r['wall_s']:.0f} | {r['images_per_s']:.0f} | {r['rss_base_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
                     f"{growth:.0f} | {1000 * growth / max(1, r['images'] - WARMUP_IMAGES):.2f} | {r['scores_mb']:.1f} | {r['jpeg_mb']:.0f} | {same} |")
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--sizes must be comma-separated image counts, got '{text}'") from None
    if not sizes or min(sizes) < WARMUP_IMAGES:
        raise SystemExit(f"--sizes must be counts of at least {WARMUP_IMAGES} images, got '{text}'")
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2903,25000,100000", help="comma-separated image counts")
    ap.add_argument("--work", type=Path, default=RUNS / "validate-scale", help="where the links and the bundle go (reused)")
    ap.add_argument("--bundle", type=Path, help="an existing bundle (default: build mobilenetv2_cub100 intel-cpu FP32 in --work)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ray", help="also run `validate --ray ADDRESS` ('local': a Ray of this machine) at every size")
    ap.add_argument("--ray-sizes", help="with --ray: only at these of --sizes (default: all)")
    ap.add_argument("--workers", type=int, help="with --ray: actors (default: the cluster's CPUs)")
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true", help="print the table of results/validate_scale.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.bundle, args.data, args.batch_size, args.ray, args.workers)))
        return
    if args.report_only:
        print(markdown(json.loads(OUT.read_text())))
        return
    sizes = parse_sizes(args.sizes)
    ray_sizes = set(parse_sizes(args.ray_sizes) if args.ray_sizes else sizes)
    if args.ray_sizes and not args.ray:
        raise SystemExit("--ray-sizes needs --ray")
    if not ray_sizes <= set(sizes):
        raise SystemExit(f"--ray-sizes {', '.join(map(str, sorted(ray_sizes - set(sizes))))} not among --sizes")
    if not TEST.is_dir():
        raise SystemExit(f"{TEST} not found (set EDGEFG_DATA)")
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or build_bundle(args.work)
    from edgefg.manifest import load_manifest

    manifest = load_manifest(bundle)
    info = machine_info()
    result: dict = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "settings": {"argv": " ".join(sys.argv[1:]), "cpu": info.get("cpu"), "cores": info.get("cores"), "bundle": str(bundle),
                                 "bundle_kind": f"{bundle.name if args.bundle else MODEL.name} {manifest.precision} {manifest.backend}",
                                 "batch_size": args.batch_size, "warmup_images": WARMUP_IMAGES, "links": None}, "runs": []}
    for n in sizes:
        folder, kind = link_images(n, args.work)
        result["settings"]["links"] = kind
        size_mb = jpeg_mb(folder)
        modes = [("in-process", None)] + ([(f"ray {args.ray}", args.ray)] if args.ray and n in ray_sizes else [])
        local_sha = None
        for mode, ray in modes:
            print(f"{n:,} images, {mode} …", flush=True)
            run = {"mode": mode, "size": n, "jpeg_mb": size_mb, **measure(bundle, folder, args.batch_size, ray, args.workers)}
            if ray is None:
                local_sha = run["report_sha256"]
            else:
                run["identical_to_in_process"] = run["report_sha256"] == local_sha
            result["runs"].append(run)
            print(f"  {run['images_per_s']:.0f} images/s, peak RSS {run['rss_peak_mb']:.0f} MB (base {run['rss_base_mb']:.0f} MB)", flush=True)
            write_json(OUT, result)  # after every run: a long one interrupted keeps what it measured
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
