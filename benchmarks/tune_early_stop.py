"""What early stopping saves in `edgefg tune`, and whether it stopped a trial that could have made it.

    python benchmarks/tune_early_stop.py [--per-class 10] [--epochs 4] [--prune 0.5]

The same sweep twice, from scratch, in-process: MobileNetV2 on cub100 (a --per-class subset of
cub100/train as training data, hard links), space = {fp32} x prune {--prune} + KD for --epochs,
target intel-cpu, --max-drop 1. Once with early stopping (the default), once with --no-early-stop.
The second run shows where the stopped trial would have ended: if it ends within the budget, the rule
was wrong. Prints a table with the CPU model and writes results/tune_early_stop.json and the block
``tune-early-stop`` of docs/tune.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if not __package__:  # python benchmarks/tune_early_stop.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import MODEL, TEST, TRAIN, machine_info, run_edgefg, write_block, write_json
from benchmarks.common import RESULTS as OUT
from benchmarks.common import RUNS as ALL_RUNS

RUNS = ALL_RUNS / "tune-early-stop"


def subset(src: Path, dst: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each class of ``src`` as hard links (copies across file systems)."""
    if dst.is_dir():
        return dst
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            try:
                os.link(f, dst / cls.name / f.name)
            except OSError:
                shutil.copy2(f, dst / cls.name / f.name)
    return dst


def run(out: Path, train: Path, space: Path, extra: list[str]) -> tuple[dict, float]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["tune", MODEL, "--data", train, "--val-data", TEST, "--target", "intel-cpu", "--space", space,
           "--max-drop", 1.0, "--val-size", 600, "--bench-iters", 10, "-o", out, *extra]
    run = run_edgefg(*cmd, ok=(0, 1))  # 1: no configuration within the budget
    return json.loads((out / "tune.json").read_text()), run.seconds


def kd_history(tune_dir: Path, trial: dict) -> dict:
    report = json.loads((Path(trial["artifact"]) / "report.json").read_text())
    kd = next(d for d in report["compression"] if d["step"] == "distil")
    return {"epochs_run": len(kd["history"]), "early_stop": kd.get("early_stop"), "final_step_drop": report["steps"][-1].get("top1_drop")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--prune", type=float, default=0.5)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        return write(json.loads((OUT / "tune_early_stop.json").read_text()))
    RUNS.mkdir(parents=True, exist_ok=True)
    train = subset(TRAIN, RUNS / f"train-{args.per_class}", args.per_class)
    space = RUNS / "space.toml"
    space.write_text(f'[space]\nprecision = ["fp32"]\nprune = [0.0, {args.prune}]\nkd_epochs = [{args.epochs}]\n')
    rows = []
    for name, extra in (("early stopping", []), ("--no-early-stop", ["--no-early-stop"])):
        res, wall = run(RUNS / name.strip("-").replace(" ", "-"), train, space, extra)
        pruned = next(t for t in res["trials"] if t["config"]["prune"])
        r = pruned["targets"]["intel-cpu"]
        rows.append({"run": name, "wall_s": wall, "trial": pruned["label"], **kd_history(RUNS, pruned), "top1_drop": r.get("top1_drop"),
                     "within_budget": r.get("within_budget"), "stopped_early": pruned.get("stopped_early"),
                     "saved_s_estimate": res["early_stopping"]["saved_s_estimate"]})
        print(f"{name}: {wall:.0f} s, epochs run {rows[-1]['epochs_run']}, drop {r.get('top1_drop')}")
    info = machine_info()
    result = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]), "cpu": info.get("cpu"),
              "cores": info.get("cores"), "per_class": args.per_class, "epochs": args.epochs, "prune": args.prune, "rows": rows}
    write_json(OUT / "tune_early_stop.json", result)
    write(result)


def write(result: dict) -> None:
    a, b = result["rows"]
    lines = [f"`python benchmarks/tune_early_stop.py {result['argv']}` on {result['cpu']} ({result['cores']} cores, shared), {result['created']}: "
             f"MobileNetV2 cub100, training data {result['per_class']} images a class, space fp32 × prune {{0, {result['prune']}}} + KD "
             f"{result['epochs']} epochs, intel-cpu, --max-drop 1, validation 600 cub100/test images.", "",
             "| run | sweep wall s | KD epochs run | pruned trial's top-1 drop pt | within budget |", "|---|---|---|---|---|"]
    for r in (a, b):
        lines.append(f"| {r['run']} | {r['wall_s']:.0f} | {r['epochs_run']} of {result['epochs']} | {r['top1_drop']:.2f} | {'yes' if r['within_budget'] else 'no'} |")
    s = a.get("stopped_early")
    if s:
        outcome = ("ended within the budget: the rule stopped a trial that would have made it." if b["within_budget"] else
                   f"ended at {b['top1_drop']:.2f} pt, over the budget: stopping it lost nothing.")
        summary = (f"Stopped: {s['reason']}. Sweep wall time {a['wall_s']:.0f} s vs {b['wall_s']:.0f} s ({b['wall_s'] / a['wall_s']:.2f}×); "
                   f"tune's own estimate of the training saved: {a['saved_s_estimate']:.0f} s. Trained to the end, the trial {outcome}")
    else:
        summary = "The pruned trial was not stopped (it could still reach the budget at its rate of improvement)."
    lines += ["", summary, ""]
    text = "\n".join(lines)
    (OUT / "tune_early_stop.md").write_text(text)
    print(text)
    write_block("tune-early-stop", text)


if __name__ == "__main__":
    main()
