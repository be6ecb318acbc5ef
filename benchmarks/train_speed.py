"""Training-step speed on this CPU: float32 NCHW vs channels-last vs bfloat16 autocast (``--train-precision bf16``).

    python benchmarks/train_speed.py [--arch tf_efficientnet_lite0 --batch 64 --rounds 5]

One distillation step as :func:`edgefg.compress.train.train` runs it (student forward, teacher forward
without gradients, :func:`~edgefg.compress.train.kd_loss`, backward, AdamW), on random 224 px inputs:
image decoding and augmentation are left out, being the same for every mode. The modes are interleaved
round by round so background load hits them alike; prints the CPU, a table (median seconds per step,
the speed-up over float32 NCHW, images per second, the minutes one cub100/train epoch of 2,999 images
would take) and writes ``results/train_speed.json`` (``--readme``: also the result block ``train-speed``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
from pathlib import Path

if not __package__:  # python benchmarks/train_speed.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import RESULTS, machine_info, write_block, write_json

MODES = {"fp32 NCHW": (False, False), "fp32 channels-last": (False, True), "bf16 autocast, channels-last": (True, True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tf_efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS / "train_speed.json"))
    ap.add_argument("--readme", action="store_true", help="also write the result block 'train-speed'")
    args = ap.parse_args()
    import timm
    import torch

    from edgefg.compress.train import cpu_has_native_bf16, kd_loss
    from edgefg.runtime.engine.timing import interleaved_rounds, time_calls

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = dict(MODES)
    if not cpu_has_native_bf16():
        modes.pop("bf16 autocast, channels-last")
        print("this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 left out (edgefg refuses it here)")
    torch.manual_seed(0)
    student = timm.create_model(args.arch, num_classes=100)
    teacher = copy.deepcopy(student).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    y = torch.randint(0, 100, (args.batch,))
    setups = {}
    for name, (bf16, nhwc) in modes.items():
        s, t = copy.deepcopy(student).train(), copy.deepcopy(teacher)
        layout = torch.channels_last if nhwc else torch.contiguous_format
        s.to(memory_format=layout)
        t.to(memory_format=layout)
        setups[name] = (s, t, torch.optim.AdamW(s.parameters(), lr=1e-4), x.contiguous(memory_format=layout), bf16)

    def step(name: str) -> None:
        s, t, opt, xb, bf16 = setups[name]
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = s(xb)
            with torch.no_grad():
                t_out = t(xb)
            loss = kd_loss(out.float(), t_out.float(), y, 4.0, 0.7)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # edgefg's one timing scheme (edgefg.runtime.engine.timing): one warm-up step each (oneDNN picks its kernels),
    # then interleaved rounds of one timed step per mode
    runners = [lambda n, name=name: time_calls(lambda: step(name), n, warmup=0) for name in setups]
    for name in setups:
        time_calls(lambda: step(name), 0, warmup=1)
    times = {name: [ms / 1e3 for ms in calls] for name, calls in zip(setups, interleaved_rounds(runners, args.rounds, 1))}
    info = machine_info()
    base = statistics.median(times["fp32 NCHW"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"mode": name, "s_per_step": med, "min_s": min(ts), "speedup": base / med, "images_per_s": args.batch / med,
                     "epoch_min_cub100_train": 2999 / (args.batch / med) / 60})
    print(f"\n{args.arch}, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}; CPU: {info.get('cpu')} "
          f"({info.get('cores')} cores, flags {' '.join(info.get('flags', []))}); median of {args.rounds} interleaved rounds\n")
    print(f"{'mode':32} {'s/step':>8} {'speed-up':>9} {'img/s':>7} {'epoch (min)':>12}")
    for r in rows:
        print(f"{r['mode']:32} {r['s_per_step']:8.2f} {r['speedup']:8.2f}× {r['images_per_s']:7.1f} {r['epoch_min_cub100_train']:12.1f}")
    out = write_json(Path(args.out), {"arch": args.arch, "batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(),
                                      "torch": torch.__version__, "machine": info, "rows": rows, "times_s": times}, indent=1)
    print(f"\nwrote {out}")
    if args.readme:
        md = [f"Written by `python benchmarks/train_speed.py --readme`: {args.arch}, batch {args.batch}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, CPU {info.get('cpu')} ({info.get('cores')} cores; {' '.join(info.get('flags', []))}); one distillation "
              f"step (student + teacher forward, backward, AdamW) on random inputs, median of {args.rounds} interleaved rounds.", "",
              "| mode | s / step | speed-up | images/s | one cub100/train epoch (2,999 images) |", "|---|---|---|---|---|"]
        md += [f"| {r['mode']} | {r['s_per_step']:.2f} | {r['speedup']:.2f}× | {r['images_per_s']:.1f} | {r['epoch_min_cub100_train']:.1f} min |" for r in rows]
        write_block("train-speed", "\n".join(md) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
