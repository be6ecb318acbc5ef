"""Field drift without labels: false alarms on in-distribution frames, delay to the alert after a switch,
and what drift monitoring costs per frame (edgefg.runtime.outputs.drift).

    python benchmarks/field_drift.py [--prefix 700] [--after 400] [--window 500] [--every 25] [--fps-frames 400]
    python benchmarks/field_drift.py --shadow     # also INT8 bundle vs FP32 shadow agreement on the stream

Real data: mobilenetv2_cub100 (compress fp32 → deploy intel-cpu, cached in runs/field-drift). cub100/test
is split per class into two halves (hard links): the *reference* half is deploy's ``--data``, so the bundle's
own ``drift_reference.json`` comes from it (every image of it); the *stream* half is replayed through
``edgefg.runtime.serve.run_pipeline`` as one camera: first ``--prefix`` frames in-distribution (the
stream half, shuffled), then ``--after`` frames of (a) an unseen class mix — only 10 classes, (b) a
darkened copy (pixels × 0.4), (c) a blurred copy (Gaussian, σ = 2 px on the 227 px image). Reported per
signal: the largest score relative to its alert level on the in-distribution prefix (< 1: no false alarm)
and the frames from the switch until that signal's ``drift`` event. A second reference, 1,000 images of
cub100/train (what the model was fitted on), shows the false alarms a reference from training images gives.
FPS with and without drift (the same pre-decoded frames, runs alternated, two rounds) gives its cost.
Prints a table with the CPU model; writes benchmarks/out/field_drift.json.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if not __package__:  # python benchmarks/field_drift.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, REPO, RUNS, TEST, TRAIN, machine_info, write_block, write_json
from benchmarks.common import OUT as OUT_DIR

WORK = RUNS / "field-drift"
OUT = OUT_DIR / "field_drift.json"
SIGNALS = ("class", "confidence", "margin", "luminance", "sharpness")


def split_test(work: Path, seed: int = 0) -> tuple[Path, list[Path]]:
    """cub100/test per class into a reference half (an ImageFolder of hard links) and a stream half."""
    ref = work / "reference-half"
    rng = random.Random(seed)
    stream: list[Path] = []
    done = ref / ".complete"
    for cls in sorted(p for p in TEST.iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.jpg"))
        rng.shuffle(files)
        half = len(files) // 2
        stream += files[half:]
        if not done.exists():
            (ref / cls.name).mkdir(parents=True, exist_ok=True)
            for f in files[:half]:
                link = ref / cls.name / f.name
                if not link.exists():
                    try:
                        os.link(f, link)
                    except OSError:
                        link.symlink_to(f)
    done.write_text("ok\n")
    return ref, stream


def build_bundle(work: Path, ref: Path, precision: str = "fp32") -> Path:
    bundle = work / f"bundle-{precision}"
    if (bundle / "manifest.json").is_file():
        return bundle
    from edgefg.compress.api import CompressOptions, compress
    from edgefg.deploy import deploy
    from edgefg.models.loader import load_model

    print(f"building {bundle} (compress {precision} + deploy intel-cpu, drift reference from {ref})", flush=True)
    opts = CompressOptions(recipe=precision, data=TRAIN, val_data=TEST, val_size=100, calib_size=32 if precision == "fp32" else 300,
                           force=True, latency_iters=3)
    art = compress(load_model(MODEL), work / f"art-{precision}", opts).directory
    return deploy(art, "intel-cpu", bundle, precision=precision, force=True, data=ref, drift_samples=100_000).directory


def train_reference(work: Path, bundle: Path, n: int = 1000) -> Path:
    path = work / "reference-train.json"
    if path.is_file():
        return path
    from edgefg.calibration.dataset import scan, stratified_subset
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.runtime.outputs.drift_profile import build_profile, write_profile

    with LoadedBundle(bundle) as m:
        samples = stratified_subset(scan(TRAIN, m.labels).samples, n, warn=False)
        write_profile(path, build_profile(m, [s.path for s in samples], f"{TRAIN} ({n} stratified)"))
    return path


def darken(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) * 0.4).astype(np.uint8)


def blur(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 2.0)


def frames(paths: list[Path], transform=None):
    from edgefg.runtime.engine.preprocess import read_image

    for p in paths:
        img = read_image(p)
        yield transform(img) if transform is not None else img


def traced_drift():
    """Patch the drift output's opener so that each run's score trace is kept: [(frames, scores, alert levels)]."""
    import edgefg.runtime.outputs.drift as drift

    made: list = []
    orig = drift.DriftOutput

    def open_output(ctx, options):
        o = orig(ctx, options)
        o.trace = []
        inner = o._score

        def score(camera, cam):
            inner(camera, cam)
            o.trace.append((cam.frames, dict(cam.scores), {s: lv[0] for s, lv in cam.levels.items()}))

        o._score = score
        made.append(o)
        return o

    drift.open_output = open_output
    return made


def scenario(bundle: Path, reference: Path | None, prefix: list[Path], after, args, made: list) -> dict:
    from edgefg.runtime.capture.sources import ArraySource
    from edgefg.runtime.outputs.drift import DriftOptions
    from edgefg.runtime.serve import RunOptions, run_pipeline

    events: list[dict] = []

    def stream():
        yield from frames(prefix)
        yield from after

    opts = RunOptions(output=Path(os.devnull), outputs={"drift": DriftOptions(reference=reference, window=args.window, every=args.every)},
                      on_event=events.append)
    t0 = time.perf_counter()
    summary = run_pipeline(bundle, ArraySource(stream()), opts, handle_signals=False)
    wall = time.perf_counter() - t0
    trace = made[-1].trace
    n0 = len(prefix)
    before = [t for t in trace if t[0] <= n0]
    worst = {s: round(max((sc[s] / lv[s] for _, sc, lv in before if s in sc), default=float("nan")), 3) for s in SIGNALS}
    first = {}
    for e in events:
        if e["event"] == "drift" and e["signal"] not in first:
            first[e["signal"]] = e["frames"]
    false_alarms = [(e["signal"], e["frames"]) for e in events if e["event"] == "drift" and e["frames"] <= n0]
    delay = {s: (first[s] - n0 if s in first and first[s] > n0 else None) for s in SIGNALS}
    after_alerts = [f - n0 for s, f in first.items() if f > n0]
    final = summary["drift"]["cameras"]["default"]
    return {"frames": summary["frames"], "fps": round(summary["frames"] / wall, 1), "in_distribution_max_score_over_level": worst,
            "false_alarms": false_alarms, "delay_frames": delay, "alert_delay_frames": min(after_alerts) if after_alerts else None,
            "final_scores": final["scores"], "final_levels": final["thresholds"], "ms_per_frame": summary["drift"]["ms_per_frame"]}


def fps_side_by_side(bundle: Path, paths: list[Path], rounds: int = 2) -> dict:
    """The same pre-decoded frames with and without drift, alternated."""
    from edgefg.runtime.capture.sources import ArraySource
    from edgefg.runtime.outputs.drift import DriftOptions
    from edgefg.runtime.serve import RunOptions, run_pipeline

    imgs = list(frames(paths))
    res: dict[str, list] = {"without": [], "with drift": []}
    cost = []
    for _ in range(rounds):
        for name in res:
            outputs = {"drift": DriftOptions(drift=True, window=500, every=25)} if name == "with drift" else {}
            s = run_pipeline(bundle, ArraySource(imgs), RunOptions(output=Path(os.devnull), outputs=outputs), handle_signals=False)
            res[name].append(s["fps"])
            if outputs:
                cost.append(s["drift"]["ms_per_frame"])
    out = {k: {"fps_runs": [round(v, 1) for v in vs], "fps": round(float(np.median(vs)), 1)} for k, vs in res.items()}
    out["drift_ms_per_frame"] = round(float(np.median(cost)), 4)
    out["frames"] = len(imgs)
    return out


def signal_cost(path: Path, reps: int = 200) -> dict:
    """ms per frame of the input signals (luminance + sharpness) on one crop, by frame size (a cub100 image scaled up)."""
    from edgefg.runtime.engine.preprocess import read_image
    from edgefg.runtime.outputs.drift_profile import input_signals

    img = read_image(path)
    out = {}
    for name, (w, h) in (("227x227", (227, 227)), ("1280x720", (1280, 720)), ("1920x1080", (1920, 1080))):
        frame = cv2.resize(img, (w, h)) if (w, h) != img.shape[1::-1] else img
        input_signals(frame)
        t0 = time.perf_counter()
        for _ in range(reps):
            input_signals(frame)
        out[name] = round((time.perf_counter() - t0) * 1e3 / reps, 3)
    return out


def shadow_run(bundle_int8: Path, bundle_fp32: Path, paths: list[Path]) -> dict:
    from edgefg.runtime.capture.sources import ArraySource
    from edgefg.runtime.outputs.drift import DriftOptions
    from edgefg.runtime.serve import RunOptions, run_pipeline

    opts = DriftOptions(drift=False, shadow=bundle_fp32, shadow_every=2)
    s = run_pipeline(bundle_int8, ArraySource(frames(paths)), RunOptions(output=Path(os.devnull), outputs={"drift": opts}), handle_signals=False)
    return {"frames": s["frames"], "fps": round(s["fps"], 1), **{k: v for k, v in s["drift"]["shadow"].items() if k != "cameras"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", type=int, default=700, help="in-distribution frames before the switch")
    ap.add_argument("--after", type=int, default=400, help="frames after the switch")
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--fps-frames", type=int, default=400)
    ap.add_argument("--shadow", action="store_true", help="also build an INT8 bundle and measure its agreement with the FP32 one as a shadow")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", action="store_true", help="also write the table into docs/field-loop.md (block field-drift)")
    ap.add_argument("--json", type=Path, default=OUT, help=f"where to write the results (default {OUT.relative_to(REPO)})")
    args = ap.parse_args()
    if not TEST.is_dir():
        raise SystemExit(f"no cub100 at {DATA} (set EDGEFG_DATA)")
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.runtime.outputs.drift_profile import PROFILE_NAME, load_profile

    WORK.mkdir(parents=True, exist_ok=True)
    ref, stream = split_test(WORK, args.seed)
    bundle = build_bundle(WORK, ref)
    with LoadedBundle(bundle) as m:
        labels = m.labels
    prof = load_profile(bundle / PROFILE_NAME, labels)
    train_ref = train_reference(WORK, bundle)
    rng = random.Random(args.seed)
    order = stream[:]
    rng.shuffle(order)
    prefix, rest = order[: args.prefix], order[args.prefix :]
    classes = sorted({p.parent.name for p in stream})
    ten = set(rng.sample(classes, 10))
    mix = [p for p in rest if p.parent.name in ten] or [p for p in order if p.parent.name in ten]
    after_paths = (rest * (args.after // max(1, len(rest)) + 1))[: args.after]
    mix_paths = (mix * (args.after // len(mix) + 1))[: args.after]
    rng.shuffle(mix_paths)
    made = traced_drift()
    scenarios = {}
    for name, gen in (("10 classes", lambda: frames(mix_paths)), ("darkened x0.4", lambda: frames(after_paths, darken)),
                      ("blurred sigma 2", lambda: frames(after_paths, blur))):
        print(f"scenario {name} ...", flush=True)
        scenarios[name] = scenario(bundle, None, prefix, gen(), args, made)
    print("in-distribution only, reference from cub100/train ...", flush=True)
    train_run = scenario(bundle, train_ref, prefix, iter(()), args, made)
    print("FPS with / without drift ...", flush=True)
    fps = fps_side_by_side(bundle, order[: args.fps_frames])
    shadow = None
    if args.shadow:
        int8 = build_bundle(WORK, ref, "int8")
        print("shadow agreement INT8 vs FP32 ...", flush=True)
        shadow = shadow_run(int8, bundle, order[:400])
    info = machine_info()
    result = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]), "cpu": info.get("cpu"),
              "cores": info.get("cores"), "bundle": str(bundle), "reference": {"images": prof.images, "source": prof.source},
              "stream_images": len(stream), "prefix": args.prefix, "after": args.after, "window": args.window, "every": args.every,
              "ten_classes": sorted(ten), "scenarios": scenarios, "train_reference": train_run, "fps": fps, "shadow": shadow}
    result["signal_ms"] = signal_cost(order[0])
    write_json(args.json, result)
    print(table(result))
    if args.docs:
        write_docs(result)


def write_docs(result: dict) -> None:
    write_block("field-drift", table(result) + "\n")


def table(r: dict) -> str:
    lines = [f"`python benchmarks/field_drift.py {r['argv']}` on {r['cpu']} ({r['cores']} cores), {r['created']}; mobilenetv2_cub100 FP32 intel-cpu; "
             f"reference: {r['reference']['images']} images (half of cub100/test); stream: {r['prefix']} in-distribution frames then {r['after']} "
             f"switched; window {r['window']}, scored every {r['every']}.", "",
             "In-distribution prefix: largest score / alert level (≥ 1 would be a false alarm); after the switch: frames until the signal's alert.", "",
             "| scenario | " + " | ".join(SIGNALS) + " | first alert after (frames) | false alarms |", "|---|" + "---|" * (len(SIGNALS) + 2)]
    for name, s in r["scenarios"].items():
        cells = [f"{s['in_distribution_max_score_over_level'][k]:.2f} / {s['delay_frames'][k] if s['delay_frames'][k] is not None else '–'}" for k in SIGNALS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['alert_delay_frames'] if s['alert_delay_frames'] is not None else 'none'} | {len(s['false_alarms'])} |")
    t = r["train_reference"]
    lines.append("| reference = 1,000 cub100/train images, no switch | " + " | ".join(f"{t['in_distribution_max_score_over_level'][k]:.2f} / –" for k in SIGNALS)
                 + f" | – | {len(t['false_alarms'])} ({', '.join(sorted({s for s, _ in t['false_alarms']})) or '-'}) |")
    f = r["fps"]
    lines += ["", f"Cost ({f['frames']} pre-decoded frames, median of runs alternated): without drift {f['without']['fps']} FPS "
                  f"{f['without']['fps_runs']}, with drift {f['with drift']['fps']} FPS {f['with drift']['fps_runs']}; drift's own time "
                  f"{f['drift_ms_per_frame']} ms/frame; its input signals alone, by crop size: "
                  + ", ".join(f"{k} {v} ms" for k, v in r.get("signal_ms", {}).items()) + "."]
    if r.get("shadow"):
        s = r["shadow"]
        lines.append(f"Shadow: INT8 bundle with the FP32 bundle as --shadow every 2nd frame, {s['frames']} frames: agreement {s['shadow_agreement']} "
                     f"[{s['shadow_ci_low']}, {s['shadow_ci_high']}] on {s['shadow_compared']} compared, {s['shadow_dropped']} dropped; {s['fps']} FPS.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
