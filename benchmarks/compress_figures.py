"""Real-data figures for ``edgefg compress`` (README "Compression" section).

    python benchmarks/compress_figures.py int8    # accuracy-aware INT8 on mobilenetv2_cub100
    python benchmarks/compress_figures.py prune   # 30% structured pruning + KD on mobilenetv2_cub100
    python benchmarks/compress_figures.py vit     # tiny ViT trained briefly on cub100: EViT/ToMe/ILA
    python benchmarks/compress_figures.py vit-retime  # re-time the vit variants (more rounds)

``int8`` and ``prune`` run the edgefg CLI exactly as a user would (the command is printed and
stored) on ../shared/data (``EDGEFG_DATA``) and copy each report to results/compress/. ``vit`` trains
a tiny ViT from scratch at low resolution for a few minutes (no pretrained ViT is available here),
then measures token reduction and ILA adapters against the same model in one run. These are small
CPU-scale figures, far from the papers' settings (ImageNet-pretrained ViT-B/16, 224–448 px, GPUs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEFG_DATA", REPO.parent / "shared" / "data"))
OUT = REPO / "results" / "compress"
RUNS = REPO / "runs" / "compress"
MODEL = DATA / "models" / "mobilenetv2_cub100"
TRAIN, TEST = DATA / "cub100" / "train", DATA / "cub100" / "test"


def _edgefg(args: list[str], name: str) -> dict:
    exe = str(Path(sys.executable).with_name("edgefg"))
    cmd = [exe, "compress", *args]
    shown = "edgefg compress " + " ".join(str(a).replace(str(REPO) + "/", "").replace(str(REPO.parent), "..") for a in args)
    print(f"$ {shown}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
    seconds = time.time() - t0
    out_dir = Path(args[args.index("-o") + 1])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if not (out_dir / "report.json").is_file():
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"{name}: no report (exit {proc.returncode})")
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    for f in ("report.md", "report.png"):
        if (out_dir / f).is_file():
            shutil.copy2(out_dir / f, OUT / f"{name}-{f}")
    summary = {"command": shown, "exit_code": proc.returncode, "seconds": round(seconds, 1), "report": report}
    (OUT / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def fig_int8(args) -> None:
    s = _edgefg(
        [str(MODEL), "--data", str(TRAIN), "--val-data", str(TEST), "--max-drop", "0.5", "--max-class-drop", str(args.class_budget),
         "-o", str(RUNS / "mnv2-int8-acc"), "--force"],
        "int8-accuracy",
    )
    r = s["report"]
    q = r["compression"][-1]
    print(f"exit {s['exit_code']}: top-1 {r['steps'][0]['top1']:.4f} → {r['steps'][-1]['top1']:.4f} (drop {q['top1_drop']:.2f} pt), "
          f"worst class {q['worst_class']}, float layers {len(q['float_layers_nncf']) + len(q['float_layers_per_class'])}")


def fig_prune(args) -> None:
    s = _edgefg(
        [str(MODEL), "--data", str(TRAIN), "--val-data", str(TEST), "--recipe", "fp32", "--prune", str(args.ratio), "--epochs", str(args.epochs),
         *(["--max-steps", str(args.max_steps)] if args.max_steps else []), "-o", str(RUNS / "mnv2-prune"), "--force"],
        "prune-kd",
    )
    for row in s["report"]["steps"]:
        print(f"{row['step']:<18} params {row['params']:>9,}  MACs {row['macs'] / 1e6:7.1f} M  latency {row['latency_ms_p50']:.2f} ms  top-1 {row['top1']:.4f}")


def fig_vit(args) -> None:
    from vit_tiny_cub import run  # benchmarks/vit_tiny_cub.py

    run(args)


def fig_vit_retime(args) -> None:
    from vit_tiny_cub import retime

    retime()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figure", choices=["int8", "prune", "vit", "vit-retime", "all"])
    ap.add_argument("--class-budget", type=float, default=10.0, help="per-class budget for the int8 figure (points)")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=6.0, help="vit: training time budget for the tiny ViT")
    args = ap.parse_args()
    if not MODEL.is_dir():
        raise SystemExit(f"real data not found at {DATA} (set EDGEFG_DATA)")
    sys.path.insert(0, str(Path(__file__).parent))
    if args.figure == "vit-retime":
        fig_vit_retime(args)
    for name, fn in (("int8", fig_int8), ("prune", fig_prune), ("vit", fig_vit)):
        if args.figure in (name, "all"):
            fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
