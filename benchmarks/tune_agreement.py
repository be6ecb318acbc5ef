"""Label-free accuracy in `edgefg tune`: agreement with FP32 on frames the model saw vs frames it did not.

    python benchmarks/tune_agreement.py [--frames 2000] [--val-size 600]

The same small sweep (MobileNetV2 on cub100; fp32, int8, int8 at 160 px; target intel-cpu) twice, with
``--agreement-data`` = cub100/train (the images the model was trained on) and = cub100/test (images it
never saw). Prints per trial the agreement with its 95 % interval and the labelled top-1 drop, with the
CPU model; writes results/tune_agreement.json and the block ``tune-agreement`` of docs/tune.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if not __package__:  # python benchmarks/tune_agreement.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import MODEL, TEST, TRAIN, machine_info, run_edgefg, write_block, write_json
from benchmarks.common import RESULTS as OUT
from benchmarks.common import RUNS as ALL_RUNS

RUNS = ALL_RUNS / "tune-agreement"
SPACE = '[space]\nprecision = ["fp32", "int8"]\nresolution = ["none", 160]\n'


def sweep(name: str, frames: Path, args) -> dict:
    out = RUNS / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["tune", MODEL, "--data", TRAIN, "--val-data", TEST, "--target", "intel-cpu", "--space", RUNS / "space.toml",
           "--val-size", args.val_size, "--agreement-data", frames, "--agreement-size", args.frames, "--bench-iters", 10, "-o", out]
    run_edgefg(*cmd, ok=(0, 1))  # 1: no configuration within the budget
    return json.loads((out / "tune.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--val-size", type=int, default=600)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        return write(json.loads((OUT / "tune_agreement.json").read_text()))
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "space.toml").write_text(SPACE)
    runs = {}
    for name, frames in (("seen (cub100/train)", TRAIN), ("unseen (cub100/test)", TEST)):
        res = sweep(name.split()[0], frames, args)
        runs[name] = {"agreement_data": res["agreement_data"], "trials": [
            {"label": t["label"], **{k: t["targets"]["intel-cpu"].get(k) for k in ("frame_agreement", "top1_drop", "within_budget")}}
            for t in res["trials"]], "chosen": next(t["label"] for t in res["trials"] if t["id"] == res["best"]["intel-cpu"].get("trial"))}
        print(name, [(t["label"], t["frame_agreement"]["agreement"]) for t in runs[name]["trials"]])
    info = machine_info()
    result = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]), "cpu": info.get("cpu"),
              "cores": info.get("cores"), "runs": runs}
    write_json(OUT / "tune_agreement.json", result)
    write(result)


def write(result: dict) -> None:
    lines = [f"`python benchmarks/tune_agreement.py {result['argv']}` on {result['cpu']} ({result['cores']} cores), {result['created']}: MobileNetV2 "
             "cub100, intel-cpu; top-1 drop on 600 labelled cub100/test images (6 a class); agreement with FP32 on the frames, 95 % Wilson interval.", "",
             "| frames | config | agreement with FP32 [95 %] | frames that disagree | labelled top-1 drop pt |", "|---|---|---|---|---|"]
    for name, run in result["runs"].items():
        a0 = run["agreement_data"]
        for t in run["trials"]:
            a = t["frame_agreement"]
            lines.append(f"| {name}, {a0['used']} of {a0['found']} | {t['label']} | {a['agreement']:.4f} [{a['ci95'][0]:.4f}, {a['ci95'][1]:.4f}] | "
                         f"{a['images'] - a['agree']} | {t['top1_drop']:.2f} |")
    seen = result["runs"].get("seen (cub100/train)")
    if seen:
        lines += ["", f"Of the seen frames, {seen['agreement_data']['also_in_training_data']} were recognised as training images (same file), and tune "
                      "said so in its log and report."]
    text = "\n".join(lines) + "\n"
    (OUT / "tune_agreement.md").write_text(text)
    print(text)
    write_block("tune-agreement", text)


if __name__ == "__main__":
    main()
