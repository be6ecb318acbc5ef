"""``edgefg train`` on real data: a linear probe of the iNat-birds MobileNetV2 backbone on cub100/train,
scored on cub100/test beside the shipped mobilenetv2_cub100 head (same frozen backbone, head fitted elsewhere).

    python benchmarks/train_probe.py [--reuse] [--mode linear|finetune] [--epochs N] [--device cpu|cuda] [--no-docs]

Runs ``edgefg train ../shared/data/models/mobilenetv2_inat_birds --data cub100/train --val-data cub100/test``
(into runs/train/MODE; ``--reuse`` keeps a finished one), then scores the reference model on the same test
images with the same feature path (classes matched by name). Prints a table with the CPU model and writes
results/train_probe.json and the block ``train-probe`` of docs/train.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

if not __package__:  # python benchmarks/train_probe.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import DATA, MODEL, RESULTS, RUNS, TEST, TRAIN, machine_line, run_edgefg, write_block, write_json

BACKBONE = DATA / "models" / "mobilenetv2_inat_birds"


def reference_top1(batch_size: int = 32) -> dict[str, float]:
    """The shipped mobilenetv2_cub100 model on cub100/test, through the same feature path as the probe."""
    import numpy as np
    import torch

    from edgefg.calibration.dataset import scan
    from edgefg.models.loader import load_model
    from edgefg.train.api import features

    ref = load_model(MODEL)
    x, y, _ = features(ref.module.eval(), scan(TEST, ref.labels).samples, ref, batch_size, "reference features")
    with torch.inference_mode():
        logits = ref.module.get_classifier()(torch.from_numpy(x)).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {"top1": round(float((logits.argmax(1) == y).mean()), 4), "top5": round(float(np.mean([t in r for t, r in zip(y, top5)])), 4), "images": int(len(y))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["linear", "finetune"], default="linear")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="keep a finished runs/train/MODE")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    out = RUNS / "train" / args.mode
    if not (args.reuse and (out / "train.json").is_file()):
        cmd = ["train", BACKBONE, "--data", TRAIN, "--val-data", TEST, "--mode", args.mode, "-o", out, "--force"]
        if args.mode == "finetune":
            cmd += ["--epochs", args.epochs, "--device", args.device]
        t0 = time.perf_counter()
        run_edgefg(*cmd, echo=True)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    report = json.loads((out / "train.json").read_text())
    ref = reference_top1()
    machine = machine_line()
    lp, val = report["linear_probe"], report["val"]
    result = {"machine": machine, "command": f"python benchmarks/train_probe.py --mode {args.mode}" + (f" --epochs {args.epochs} --device {args.device}" if args.mode == "finetune" else ""), "backbone": str(BACKBONE.name),
              "mode": args.mode, "train_images": report["train_images"], "classes": report["classes"], "weight_decay": lp["weight_decay"],
              "holdout_top1": lp["holdout_top1"], "train_seconds": report["train_seconds"], "val": {k: val[k] for k in ("images", "top1", "top5")},
              "reference": {"model": MODEL.name, **ref}, "worst_classes": sorted(val["per_class"].items(), key=lambda kv: kv[1]["top1"])[:5]}
    write_json(RESULTS / f"train_probe_{args.mode}.json", result)
    rows = [("edgefg train (" + args.mode + ")", val["top1"], val["top5"], f"{report['train_seconds']:.0f} s"),
            (f"{MODEL.name} (shipped head)", ref["top1"], ref["top5"], "—")]
    print(f"\n{machine}; cub100/test {val['images']} images")
    print(f"{'model':<40}{'top-1':>8}{'top-5':>8}{'time':>10}")
    for name, t1, t5, secs in rows:
        print(f"{name:<40}{t1:>8.4f}{t5:>8.4f}{secs:>10}")
    md = (f"{machine}; `{result['command']}`: backbone `{BACKBONE.name}` (965-class iNat birds), "
          f"{report['train_images']} cub100/train images of {report['classes']} classes, cub100/test {val['images']} images. "
          f"Head L2 {lp['weight_decay']:g} chosen on a 20 % hold-out "
          f"({', '.join(f'{k}: {v:.3f}' for k, v in lp['holdout_top1'].items())}).\n\n"
          "| model | top-1 | top-5 | train time |\n|---|---:|---:|---:|\n"
          + "".join(f"| {n} | {t1:.4f} | {t5:.4f} | {s} |\n" for n, t1, t5, s in rows))
    if not args.no_docs:
        write_block(f"train-probe-{args.mode}", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
