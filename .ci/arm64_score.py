"""Per-image scores of a bundle on an ImageFolder, as ``edgefg validate`` computes them, saved as .npz.

    python .ci/arm64_score.py BUNDLE DATA OUT.npz

Run with the same edgefg on the x86 host and in the arm64 root (.ci/arm64.py exec), so the two can be
compared image by image (benchmarks/arm64_parity.py, tests/test_arm64.py). Needs only the device
install (numpy + the bundle's engine); paths are stored relative to DATA.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def load_scores(path: Path) -> dict:
    """An .npz written by :func:`main` (no pickles): scores, labels, relative paths, info."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {"scores": z["scores"], "labels": z["labels"], "paths": [str(p) for p in z["paths"]], "info": json.loads(str(z["info"]))}


def compare(candidate: dict, reference: dict, names: list[str], activation: str = "logits") -> dict:
    """``candidate`` (arm64) against ``reference`` (x86) scores of the same images: per-image agreement,
    top-1 of each, per-class drops with their paired sign test, and the largest output difference (in
    the bundle's output quantization steps when it has a scale)."""
    import numpy as np

    from edgefg.validate.metrics import class_drops, classification, parity, significant_worst_drop

    if candidate["paths"] != reference["paths"]:
        common = len(set(candidate["paths"]) & set(reference["paths"]))
        raise ValueError(f"the two score files cover different images ({common} in common of {len(reference['paths'])})")
    a, b = candidate["scores"].astype(np.float64), reference["scores"].astype(np.float64)
    par = parity(a, b, activation)
    cand, ref = classification(a, candidate["labels"], names), classification(b, reference["labels"], names)
    drops = class_drops(cand, ref)
    diff = np.abs(a - b)
    scale = reference["info"].get("output_scale")
    steps = diff / scale if scale else None
    differing = np.flatnonzero(diff.max(axis=1) > (0.5 * scale if scale else 0))
    worst = drops[0] if drops else {}
    return {
        "images": len(reference["paths"]),
        "agreement": float(par["top1_agreement"]),
        "disagreeing_images": [reference["paths"][i] for i in np.flatnonzero(a.argmax(1) != b.argmax(1))],
        "top1": float(cand["top1"]), "reference_top1": float(ref["top1"]), "top1_drop_pts": 100.0 * (float(ref["top1"]) - float(cand["top1"])),
        "mean_kl": float(par["mean_kl"]),
        "max_abs_diff": float(diff.max()), "output_scale": scale,
        "max_diff_steps": None if steps is None else int(round(float(steps.max()))),
        "mean_diff_steps": None if steps is None else float(steps.mean()),
        "images_with_output_difference": int(len(differing)),
        "worst_class": {k: worst.get(k) for k in ("class", "images", "drop_pts", "drop_images", "lost", "gained", "p_value", "p_adjusted")},
        "classes_changed": sum(1 for r in drops if r.get("lost", 0) + r.get("gained", 0) > 0),
        "significant_class_drop_pts": float(significant_worst_drop(drops, 0.05)),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python .ci/arm64_score.py BUNDLE DATA OUT.npz", file=sys.stderr)
        return 2
    import numpy as np

    from edgefg.calibration.dataset import scan
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.validate.evaluate import score_samples

    bundle_dir, data, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    with LoadedBundle(bundle_dir) as bundle:
        samples = scan(data, bundle.labels).samples
        scored = score_samples(bundle, samples, 8, "scoring")
        scale = bundle.manifest.outputs[0].quant_scale
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - only a label
        litert = "?"
    info = {"machine": platform.machine(), "python": platform.python_version(), "qemu_cpu": os.environ.get("QEMU_CPU"), "ai_edge_litert": litert,
            "output_scale": scale, "skipped": [str(p) for p in scored.skipped]}
    np.savez(out, scores=scored.scores, labels=scored.labels, paths=np.array([str(Path(p).relative_to(data)) for p in scored.paths]),
             info=np.array(json.dumps(info)))
    print(f"scored {len(scored.paths)} images on {info['machine']} (QEMU_CPU={info['qemu_cpu']}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
