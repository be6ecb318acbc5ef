"""The rpi5 INT8 bundle on arm64 (Debian bookworm under qemu-user, .ci/arm64.py) vs the x86 stand-in.

    python benchmarks/arm64_parity.py [--images 300] [--cpus cortex-a76,max] [--no-docs]

Builds the bundle with the normal flow when absent (``edgefg compress`` of mobilenetv2_cub100 with
``--recipe int8``, ``edgefg deploy --target rpi5``, both on cub100/train, into runs/arm64/), takes a
stratified subset of cub100/test, and runs on it ``edgefg validate`` plus a per-image score dump
(.ci/arm64_score.py) on this host and in the arm64 root, emulating each ``--cpus`` core. Compares
per-image agreement, top-1, per-class drops (paired sign test) and the largest output difference in
quantization steps, and evaluates the rpi5 profile's gate (its [budget]: top-1 drop, class drop vs the
FP32 PyTorch model) with the x86 scores and with the arm64 ones. Writes results/arm64.json and the
``arm64`` block of docs/arm64.md. Emulated timings are not device timings: none is reported.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # python benchmarks/arm64_parity.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import MODEL, REPO, RESULTS, RUNS, TEST, TRAIN, edgefg_env, machine_line, rel, run_edgefg, write_block, write_json

WORK = RUNS / "arm64"
BUNDLE = WORK / "bundle-rpi5-int8"
ARTIFACT = WORK / "art-int8"
SCORE = REPO / ".ci" / "arm64_score.py"
PROFILE = REPO / "edgefg" / "targets" / "profiles" / "rpi5.toml"


def ci_module(name: str):
    """A module of .ci/ (not a package) by file name."""
    spec = importlib.util.spec_from_file_location(name, REPO / ".ci" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_bundle() -> list[str]:
    """The rpi5 INT8 bundle by the normal flow; returns the commands run."""
    compress = ["compress", MODEL, "--data", TRAIN, "--val-data", TEST, "--val-size", 300, "--recipe", "int8", "-o", ARTIFACT, "--force"]
    deploy = ["deploy", ARTIFACT, "--target", "rpi5", "--data", TRAIN, "-o", BUNDLE, "--force"]
    for args in (compress, deploy):
        run_edgefg(*args, echo=True)
    return [f"edgefg {' '.join(rel(a) if isinstance(a, Path) else str(a) for a in args)}" for args in (compress, deploy)]


def subset(count: int) -> Path:
    """A stratified ``count``-image subset of cub100/test copied to runs/arm64/subset-N (both machines read the same files)."""
    from edgefg.calibration.dataset import scan, stratified_subset

    out = WORK / f"subset-{count}"
    if out.exists():
        shutil.rmtree(out)
    for s in stratified_subset(scan(TEST).samples, count, warn=False):
        (out / s.path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(s.path, out / s.path.parent.name / s.path.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="stratified subset of cub100/test")
    ap.add_argument("--cpus", default="cortex-a76", help="emulated cores, comma-separated (the first is the Pi 5's and the headline)")
    ap.add_argument("--rebuild-bundle", action="store_true")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the docs block")
    args = ap.parse_args()
    arm64, scoring = ci_module("arm64"), ci_module("arm64_score")
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    t0 = time.perf_counter()
    commands = build_bundle() if args.rebuild_bundle or not (BUNDLE / "manifest.json").is_file() else ["(reused) " + rel(BUNDLE)]
    data = subset(args.images)
    out = WORK / "out"
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as hold:  # the cache's lock, for the whole run
        try:
            root, setup = arm64.prepare(log=lambda m: print(m, file=sys.stderr), hold=hold)
        except arm64.Arm64Error as exc:
            print(f"arm64: {exc}", file=sys.stderr)
            return 2
        result = measure(args, arm64, scoring, cpus, commands, data, out, root, setup, t0)
    write_json(RESULTS / "arm64.json", result)
    md = render(result)
    print(md)
    if not args.no_docs:
        write_block("arm64", md)
        write_status(status_note(result))
    return 0


def measure(args, arm64, scoring, cpus: list[str], commands: list[str], data: Path, out: Path, root, setup: dict, t0: float) -> dict:
    """validate + scores on x86 and in the root for each core; the comparison and both gates."""

    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.validate.api import Thresholds, validate
    from edgefg.validate.evaluate import Scored

    with LoadedBundle(BUNDLE) as b:
        names, activation, budget = b.labels, b.manifest.output_activation, b.manifest.target
    from edgefg.targets import load_target

    limits = load_target("rpi5").budget
    gate = ["--reference", MODEL, "--max-top1-drop", limits["max_top1_drop"], "--max-class-drop", limits["max_class_drop"]]
    host_v = run_edgefg("validate", BUNDLE, "--data", data, *gate, "--json", out / "x86-validate.json", ok=(0, 1), echo=True)
    subprocess.run([sys.executable, str(SCORE), str(BUNDLE), str(data), str(out / "x86.npz")], check=True, env=edgefg_env(), cwd=REPO)
    host = scoring.load_scores(out / "x86.npz")
    import json

    host_json = json.loads((out / "x86-validate.json").read_text())
    binds = [arm64.Bind(BUNDLE.resolve(), "/mnt/bundle"), arm64.Bind(data.resolve(), "/mnt/data"), arm64.Bind(out.resolve(), "/mnt/out", rw=True),
             arm64.Bind((REPO / ".ci").resolve(), "/mnt/ci")]
    runs = []
    for cpu in cpus:
        tag = cpu.replace("-", "_")
        arm_json: dict = {}
        if cpu == cpus[0]:  # edgefg validate itself on the headline core; the other cores: the per-image scores only (emulation is slow)
            v = arm64.run_in_root(root, ["edgefg", "validate", "/mnt/bundle", "--data", "/mnt/data", "--json", f"/mnt/out/arm64-{tag}-validate.json"], binds, cpu=cpu,
                                  capture=True, network=False)
            if v.returncode not in (0, 1):
                raise SystemExit(f"edgefg validate in the arm64 root ({cpu}) failed (exit {v.returncode}):\n{(v.stdout + v.stderr)[-3000:]}")
            arm_json = json.loads((out / f"arm64-{tag}-validate.json").read_text())
        s = arm64.run_in_root(root, ["python", "/mnt/ci/arm64_score.py", "/mnt/bundle", "/mnt/data", f"/mnt/out/arm64-{tag}.npz"], binds, cpu=cpu, capture=True, network=False)
        if s.returncode != 0:
            raise SystemExit(f"scoring in the arm64 root ({cpu}) failed (exit {s.returncode}):\n{(s.stdout + s.stderr)[-3000:]}")
        arm = scoring.load_scores(out / f"arm64-{tag}.npz")
        cmp = scoring.compare(arm, host, names, activation)
        by_path = {p: i for i, p in enumerate(arm["paths"])}

        def replay(bundle, samples, batch_size, description, arm=arm, by_path=by_path):
            rows = [by_path[str(Path(sm.path).relative_to(data))] for sm in samples]
            return Scored(arm["scores"][rows], arm["labels"][rows], [sm.path for sm in samples])

        arm_gate = validate(BUNDLE, data, MODEL, Thresholds(limits["max_top1_drop"], limits["max_class_drop"]), scorer=replay)
        runs.append({"cpu": cpu, "info": arm["info"], "validate_top1": arm_json.get("top1"), "validate_images": arm_json.get("images"),
                     "vs_x86": cmp, "gate": {"passed": arm_gate["passed"], "top1_drop": arm_gate["top1_drop"], "checks": [c["message"] for c in arm_gate["checks"]]}})
        print(f"{cpu}: agreement {cmp['agreement']:.4f}, top-1 {cmp['top1']:.4f} vs {cmp['reference_top1']:.4f} on x86, max diff {cmp['max_diff_steps']} steps, "
              f"gate {'pass' if arm_gate['passed'] else 'FAIL'}", file=sys.stderr)
    return {
        "command": "python benchmarks/arm64_parity.py " + " ".join(sys.argv[1:]),
        "machine": machine_line(),
        "bundle": rel(BUNDLE), "bundle_commands": commands, "target": budget,
        "data": f"{rel(data)}: {host['labels'].size} images, stratified over the classes of cub100/test",
        "root": {"path": str(root.path), **root.info, **setup},
        "x86": {"info": host["info"], "validate_top1": host_json["top1"], "gate": {"passed": host_json["passed"], "top1_drop": host_json["top1_drop"],
                "checks": [c["message"] for c in host_json["checks"]]}, "exit_code": host_v.returncode},
        "arm64": runs,
        "total_s": round(time.perf_counter() - t0, 1),
    }


def status_note(r: dict) -> str:
    """The rpi5 profile's status line: the headline (first) core's result."""
    run = r["arm64"][0]
    c = run["vs_x86"]
    return (f"validated on arm64 under emulation (Debian {r['root']['suite']}, Python {r['root']['python']}, qemu {run['cpu']}; "
            f"benchmarks/arm64_parity.py, {c['images']} cub100/test images): agreement with the x86 stand-in {c['agreement']:.4f}, "
            f"top-1 {c['top1']:.4f} vs {c['reference_top1']:.4f} on x86, max output difference {c['max_diff_steps']} quantization steps, "
            f"rpi5 gate {'pass' if run['gate']['passed'] else 'FAIL'} on arm64 and {'pass' if r['x86']['gate']['passed'] else 'FAIL'} on x86")


def write_status(note: str, path: Path = PROFILE) -> None:
    """Set ``status_note`` in the rpi5 profile (the one line after ``status``), leaving the rest of the file as it is."""
    import json
    import re

    text = path.read_text(encoding="utf-8")
    line = f"status_note = {json.dumps(note)}"
    new = re.sub(r"^status_note = .*$", line, text, count=1, flags=re.M) if re.search(r"^status_note = ", text, re.M) else \
        re.sub(r"^(status = .*)$", lambda m: m.group(1) + "\n" + line, text, count=1, flags=re.M)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"status_note of {rel(path)}: written")


def render(r: dict) -> str:
    """The docs block: one row per emulated core, plus the x86 stand-in's gate."""
    lines = [
        f"Measured by `{r['command'].strip()}` on {r['machine']}: bundle `{r['bundle']}` ({r['target']}, INT8), {r['data']}. "
        f"arm64: Debian {r['root']['suite']} {r['root']['arch']}, Python {r['root']['python']}, ai-edge-litert {r['arm64'][0]['info']['ai_edge_litert'] if r['arm64'] else '?'} "
        f"under qemu-user (x86: ai-edge-litert {r['x86']['info']['ai_edge_litert']}, Python {r['x86']['info']['python']}). "
        f"Gate = the rpi5 profile's budget vs the FP32 PyTorch model ({'; '.join(r['x86']['gate']['checks']) or 'no checks'} on x86).",
        "",
        "| emulated core | images | agreement with x86 | top-1 arm64 | top-1 x86 | top-1 drop vs x86 (pts) | worst class vs x86 (pts, images, p) | classes changed | images with any output difference | max output difference (quant. steps) | rpi5 gate on arm64 | on x86 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    x86_gate = "pass" if r["x86"]["gate"]["passed"] else "FAIL"
    for run in r["arm64"]:
        c, w = run["vs_x86"], run["vs_x86"]["worst_class"]
        worst = f"{w['class']} {w['drop_pts']:+.1f} ({w['drop_images']}, p={w['p_value']:.2f})" if w.get("class") and w.get("p_value") is not None else "–"
        lines.append(f"| {run['cpu']} | {c['images']} | {c['agreement']:.4f} | {c['top1']:.4f} | {c['reference_top1']:.4f} | {c['top1_drop_pts']:+.2f} | {worst} | "
                     f"{c['classes_changed']} | {c['images_with_output_difference']} | {c['max_diff_steps']} | {'pass' if run['gate']['passed'] else 'FAIL'} | {x86_gate} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
