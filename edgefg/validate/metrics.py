"""One comparison module: task metrics and numeric parity between a candidate and its reference.

Used by compress (before/after), deploy (parity after converting), validate (CI gate) and
compare. numpy only. Accuracies are fractions 0–1; drops are percentage points.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgefg.runtime.engine.postprocess import to_probabilities, topk


def classification(scores: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict:
    """Top-1/top-5 and per-class accuracy over the labelled rows (label ≥ 0).

    ``names`` are the model's labels; per-class results cover only the classes present.
    """
    mask = labels >= 0
    scores, labels = scores[mask], labels[mask]
    if len(labels) == 0:
        return {"images": 0}
    top5 = topk(scores, 5)
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    per_class = {}
    for c in np.unique(labels):
        sel = labels == c
        per_class[names[int(c)]] = {"label": int(c), "images": int(sel.sum()), "correct": int(hit1[sel].sum()), "accuracy": float(hit1[sel].mean())}
    accs = [v["accuracy"] for v in per_class.values()]
    return {
        "images": int(len(labels)),
        "top1": float(hit1.mean()),
        "top5": float(hit5.mean()),
        "mean_class_accuracy": float(np.mean(accs)),
        "worst_class_accuracy": float(np.min(accs)),
        "per_class": per_class,
        "predictions": top5[:, 0],
        "correct": hit1,
        "labels": labels,
    }


NEAR_ZERO_FRACTION = 0.01  # |ref| below this fraction of the image's largest |ref| counts as near zero for max rel


def near_zero_note(par: dict) -> str | None:
    """Why a large max rel is not alarming, when it comes from a near-zero reference value."""
    if not par or par.get("max_rel", 0.0) <= 1.0 or "max_rel_ref_value" not in par:
        return None
    ref, scale = abs(par["max_rel_ref_value"]), par["max_rel_ref_scale"]
    if scale <= 0 or ref >= NEAR_ZERO_FRACTION * scale:
        return None
    return (f"max rel {par['max_rel']:.4g} comes from an output whose reference value is {par['max_rel_ref_value']:.3g} (near zero; that image's "
            f"outputs reach ±{scale:.3g}), where a relative error means little; on outputs ≥ {NEAR_ZERO_FRACTION:.0%} of the largest it is "
            f"{par['max_rel_sizable']:.3g}. Judge by max abs, cosine and agreement.")


def parity(candidate: np.ndarray, reference: np.ndarray, activation: str = "logits") -> dict:
    """Numeric parity of raw outputs plus prediction agreement and mean KL(ref ‖ cand)."""
    cand = candidate.astype(np.float64).reshape(len(candidate), -1)
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    diff = np.abs(cand - ref)
    denom = np.linalg.norm(cand, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.where(denom > 0, (cand * ref).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    p_ref, p_cand = to_probabilities(ref, activation), to_probabilities(cand, activation)
    eps = 1e-12
    kl = (p_ref * (np.log(p_ref + eps) - np.log(p_cand + eps))).sum(axis=1)
    rel = diff / (np.abs(ref) + 1e-6)
    # relative error explodes where the reference is ~0 (a logit near zero): also give it where |ref| is
    # at least 1 % of that image's largest |ref|, and the reference value behind the overall maximum
    scale = np.abs(ref).max(axis=1, keepdims=True) if ref.size else np.zeros((len(ref), 1))
    sizable = np.abs(ref) >= NEAR_ZERO_FRACTION * scale
    at = np.unravel_index(int(rel.argmax()), rel.shape) if rel.size else None
    extra = {
        "max_rel_ref_value": float(ref[at]) if at is not None else 0.0,
        "max_rel_ref_scale": float(scale[at[0], 0]) if at is not None else 0.0,
        "max_rel_sizable": float(rel[sizable].max()) if sizable.any() else 0.0,
    }
    return {**extra,
        "samples": int(len(cand)),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_rel": float((diff / (np.abs(ref) + 1e-6)).max()) if diff.size else 0.0,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1_agreement": float((cand.argmax(1) == ref.argmax(1)).mean()),
        "mean_kl": float(max(kl.mean(), 0.0)),
    }


def sign_test_p(lost: int, gained: int) -> float:
    """One-sided exact sign (McNemar) test: P(≥ ``lost`` of the ``lost + gained`` discordant images
    go against the candidate if a flip either way were equally likely). Small p = a real drop."""
    n = lost + gained
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n)


def class_drops(candidate: dict, reference: dict) -> list[dict]:
    """Per-class accuracy change, worst first: drop in points and in images, and — when both
    were scored on the same images — the paired sign-test p-value of the drop."""
    paired = (
        "correct" in candidate
        and "correct" in reference
        and np.array_equal(candidate.get("labels"), reference.get("labels"))
    )
    rows = []
    for name, ref in reference.get("per_class", {}).items():
        cand = candidate["per_class"].get(name)
        if cand is None:
            continue
        row = {
            "class": name,
            "images": ref["images"],
            "reference_accuracy": ref["accuracy"],
            "accuracy": cand["accuracy"],
            "drop_pts": 100.0 * (ref["accuracy"] - cand["accuracy"]),
            "drop_images": ref["correct"] - cand["correct"],
            "p_value": None,
        }
        if paired:
            sel = reference["labels"] == ref["label"]
            r, k = reference["correct"][sel], candidate["correct"][sel]
            row["lost"], row["gained"] = int((r & ~k).sum()), int((~r & k).sum())
            row["p_value"] = sign_test_p(row["lost"], row["gained"])
        rows.append(row)
    if paired:  # one test per class: correct for testing many at once (Holm, over the classes that can be tested)
        tested = [r for r in rows if r["lost"] + r["gained"] > 0]
        for r, adj in zip(tested, holm_adjust([r["p_value"] for r in tested])):
            r["p_adjusted"] = adj
        for r in rows:
            r.setdefault("p_adjusted", 1.0)
    rows.sort(key=lambda r: (-r["drop_pts"], r["class"]))
    return rows


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: a class whose adjusted p is below
    alpha is a real drop with the family-wise error over all tested classes held at alpha."""
    m = len(p_values)
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def gate_p(row: dict) -> float | None:
    """The p-value a class gate uses: Holm-adjusted when the images were paired, else None."""
    return row.get("p_adjusted", row.get("p_value"))


def classes_tested(drops: list[dict]) -> int:
    """Classes with at least one discordant image: the family the correction runs over. A class where
    candidate and reference are right and wrong on the same images has p = 1 and cannot be tested."""
    return sum(1 for r in drops if r.get("lost", 0) + r.get("gained", 0) > 0)


def min_detectable_drop(images: int, tested: int, alpha: float) -> float | None:
    """The smallest drop (points) a class of ``images`` images can show as significant: every
    discordant image against the candidate, k of them, needs 0.5**k < alpha / tested (Holm's first
    step). None when even losing every image would not be significant."""
    level = alpha / max(tested, 1)
    k = math.floor(math.log2(1.0 / level)) + 1
    return 100.0 * k / images if 0 < k <= images else None


def class_gate_summary(drops: list[dict], alpha: float, gate: str = "evidence") -> dict:
    """What a class gate on these drops can and cannot see: the test, the family size, the images per
    class and the smallest drop they could show ("20 images a class can only show drops ≥ 30 pt")."""
    images = sorted(r["images"] for r in drops) or [0]
    tested = classes_tested(drops)
    median = images[len(images) // 2]
    out = {"gate": gate, "alpha": alpha, "test": CLASS_TEST, "classes": len(drops), "classes_tested": tested,
           "images_per_class": {"min": images[0], "median": median, "max": images[-1]},
           "min_detectable_drop_pts": {"smallest_class": min_detectable_drop(images[0], tested, alpha),
                                       "median_class": min_detectable_drop(median, tested, alpha)}}
    if gate == "points":
        out["sentence"] = "class drops are compared with the budget in raw points (--class-gate points): one image can fail a class"
    else:
        d = out["min_detectable_drop_pts"]["median_class"]
        out["sentence"] = (f"{median} images a class can only show drops ≥ {d:.0f} pt" if d is not None else
                           f"{median} images a class cannot show any drop") + f" (Holm over {tested} tested classes, α {alpha:g})"
    return out


CLASS_GATES = ("evidence", "points")
CLASS_TEST = "one-sided exact sign test (McNemar) per class, Holm-corrected over the classes with discordant images"


def _significant(r: dict, alpha: float, gate: str) -> bool:
    p = gate_p(r)
    return gate == "points" or p is None or p < alpha


def class_failures(drops: list[dict], max_class_drop: float | None, alpha: float, gate: str = "evidence") -> list[dict]:
    """Classes over a per-class budget: ``--max-class-drop`` means the same in compress, validate and tune.

    ``gate="evidence"`` (the default): a class fails when it lost more than ``max_class_drop`` points
    **and** its paired sign test, Holm-corrected over the tested classes, gives p < ``alpha`` (one
    image of 20 is 5 points: noise, not a failure). ``gate="points"``: every drop over the budget
    fails (alpha is not used). Without a p-value (images not paired) the points decide."""
    if gate not in CLASS_GATES:
        raise ValueError(f"class gate '{gate}' is not one of {CLASS_GATES}")
    if max_class_drop is None:
        return []
    return [r for r in drops if r["drop_pts"] > max_class_drop and _significant(r, alpha, gate)]


def significant_worst_drop(drops: list[dict], alpha: float, gate: str = "evidence") -> float:
    """The largest drop (points) among classes whose drop counts under ``gate``; 0 if none."""
    sig = [r["drop_pts"] for r in drops if r["drop_pts"] > 0 and _significant(r, alpha, gate)]
    return max(sig, default=0.0)


def worst_class_drop(drops: list[dict]) -> tuple[float, str | None]:
    """The largest per-class drop in points and its class, from :func:`class_drops` rows. Never
    negative: (0.0, None) when no class lost accuracy (a class that gained is not a "drop")."""
    if drops and drops[0]["drop_pts"] > 0:
        return float(drops[0]["drop_pts"]), drops[0]["class"]
    return 0.0, None


def significant_drop_count(drops: list[dict], alpha: float) -> int:
    """How many classes lost accuracy with a Holm-adjusted paired sign-test p-value below ``alpha``."""
    return sum(1 for r in drops if r["drop_pts"] > 0 and gate_p(r) is not None and gate_p(r) < alpha)


def losing_classes(drops: list[dict]) -> list[dict]:
    """Only the classes that lost accuracy, worst first (for the "worst classes" tables)."""
    return sorted((r for r in drops if r["drop_pts"] > 0), key=lambda r: (-r["drop_pts"], r["class"]))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % by default) of a proportion k/n: honest near 1.0, where agreement lives."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def strip_arrays(metrics: dict) -> dict:
    """Drop the per-image arrays so the dict serialises to JSON."""
    return {k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)}
