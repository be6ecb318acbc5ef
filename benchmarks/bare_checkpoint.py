"""A bare checkpoint keeps its preprocessing: the same weights compressed as a hub folder, as a bare
checkpoint + its config.json, and as a bare checkpoint + explicit flags score the same on real data.

    python benchmarks/bare_checkpoint.py                 # fp32 (+ int8: --int8), writes results/bare_checkpoint.json + block
    python benchmarks/bare_checkpoint.py --val-size 300  # quick check (no block written)

The bare checkpoint is mobilenetv2_cub100's model.safetensors copied into a temporary folder with its
config.json beside it under another name (so nothing is read from beside the weights). Also run: the bare
checkpoint with nothing given (the refusal, exit 2) and with ``--timm-defaults`` (timm's defaults for
mobilenetv2_100 — what the ``--arch --num-classes`` route used to do without a word).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

if not __package__:  # python benchmarks/bare_checkpoint.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RESULTS, RUNS, TEST, TRAIN, cpu_model, edgefg_compress, run_edgefg, shown, write_block, write_json

BLOCK = "bare-checkpoint"


def routes(bare: Path, config: Path, labels: Path) -> dict[str, list[Any]]:
    """The model arguments of each route; the explicit flags are read from the hub folder's config.json."""
    cfg = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    pre, args = cfg["pretrained_cfg"], cfg.get("model_args") or {}
    pad = {"": "symmetric"}.get(args.get("pad_type", ""), args.get("pad_type", ""))
    flags = ["--arch", cfg["architecture"], "--num-classes", cfg["num_classes"], "--labels", labels,
             "--mean", *pre["mean"], "--std", *pre["std"], "--crop-pct", pre["crop_pct"], "--interpolation", pre["interpolation"],
             "--model-input-size", *pre["input_size"][1:], "--pad-type", pad]
    return {
        "hub folder": [MODEL],
        "bare + --config": [bare, "--config", config],
        "bare + explicit flags": [bare, *flags],
        "bare + --timm-defaults": [bare, "--arch", cfg["architecture"], "--num-classes", cfg["num_classes"], "--labels", labels, "--timm-defaults"],
    }


def top1(report: dict[str, Any]) -> tuple[float, float]:
    """(the FP32 reference's top-1, the recipe's final model's top-1) of a compress report."""
    return float(report["steps"][0]["top1"]), float(report["steps"][-1]["top1"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8", action="store_true", help="also run --recipe int8 for the three routes that must agree")
    ap.add_argument("--val-size", type=int, help="score a stratified subset of N test images (quick check; no block written)")
    ap.add_argument("--no-readme", action="store_true", help="do not write the docs block")
    args = ap.parse_args()
    if not MODEL.is_dir():
        print(f"real data not found at {DATA} (set EDGEFG_DATA)", file=sys.stderr)
        return 2
    work = RUNS / "bare-checkpoint"
    shutil.rmtree(work, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="edgefg-bare-") as tmp:
        bare, config, labels = Path(tmp) / "weights.safetensors", Path(tmp) / "my-config.json", Path(tmp) / "classes.txt"
        shutil.copy2(MODEL / "model.safetensors", bare)
        shutil.copy2(MODEL / "config.json", config)
        shutil.copy2(MODEL / "labels.txt", labels)
        model_args = routes(bare, config, labels)
        refusal = run_edgefg("compress", bare, "--arch", "mobilenetv2_100", "--num-classes", 100, "--data", TRAIN, "-o", work / "refused", ok=(2,))
        common = ["--data", TRAIN, "--val-data", TEST, "--latency-iters", 3, "--no-plot", *(["--val-size", args.val_size] if args.val_size else [])]
        runs: list[dict[str, Any]] = []
        for recipe in ["fp32", *(["int8"] if args.int8 else [])]:
            for name, m in model_args.items():
                if recipe != "fp32" and "timm-defaults" in name:
                    continue
                out = work / f"{recipe}-{name.replace(' ', '').replace('+', '-').replace('--', '-')}"
                res = edgefg_compress([*m, "--recipe", recipe, *common, "-o", out], out.with_suffix(".log"))
                fp32, final = top1(res["report"])
                runs.append({"route": name, "recipe": recipe, "command": res["command"].replace(tmp, "TMP"), "exit_code": res["exit_code"],
                             "seconds": res["seconds"], "fp32_top1": fp32, "top1": final, "images": res["report"]["validation"]["images"],
                             "preprocess": res["report"]["preprocess"]["manifest"], "settings": res["report"]["model"].get("settings"),
                             "model_args": res["report"]["model"].get("model_args")})
                print(f"  {recipe:<5} {name:<24} top-1 {100 * final:.2f} %", flush=True)
    result = {"machine": cpu_model(), "model": "mobilenetv2_cub100", "data": f"cub100/test ({runs[0]['images']} images)",
              "refusal": {"command": shown(refusal.args).replace(str(bare.parent), "TMP"), "exit_code": refusal.returncode,
                          "stderr": refusal.stderr.strip().replace(str(bare.parent), "TMP")},
              "runs": runs}
    write_json(RESULTS / "bare_checkpoint.json", result)
    md = markdown(result)
    print(md)
    if not args.no_readme and not args.val_size:
        write_block(BLOCK, md)
    return 0


def markdown(r: dict[str, Any]) -> str:
    hub = {x["recipe"]: x["top1"] for x in r["runs"] if x["route"] == "hub folder"}
    rows = [f"| {x['route']} | {x['recipe']} | {100 * x['top1']:.2f} % | {100 * (x['top1'] - hub[x['recipe']]):+.2f} pt | `{x['command']}` |"
            for x in r["runs"]]
    refusal = r["refusal"]["stderr"].splitlines()
    return (
        f"Written by `python benchmarks/bare_checkpoint.py{' --int8' if any(x['recipe'] == 'int8' for x in r['runs']) else ''}` on {r['machine']}: "
        f"{r['model']}'s weights on {r['data']}, as its hub folder and as a bare `weights.safetensors` in a temporary folder (TMP) "
        "with its config.json under another name.\n\n"
        "| model given as | recipe | top-1 | vs hub folder | command |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"The bare checkpoint with nothing but `--arch --num-classes` (exit {r['refusal']['exit_code']}):\n\n"
        + "".join(f"> `{line}`  \n" for line in refusal)
    )


if __name__ == "__main__":
    sys.exit(main())
