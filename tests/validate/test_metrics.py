import numpy as np

from edgefg.validate.metrics import class_drops, classification, parity, sign_test_p


def test_classification_topk_and_per_class():
    names = ["a", "b", "c", "d", "e", "f"]
    scores = np.array([[9, 1, 0, 0, 0, 0], [0, 9, 1, 1, 1, 1], [9, 8, 7, 6, 5, 0], [0, 1, 2, 3, 4, 9]], float)
    labels = np.array([0, 0, 2, 5])
    m = classification(scores, labels, names)
    assert m["top1"] == 0.5 and m["top5"] == 0.75  # row 1 not even in top-5; row 2 in top-5 only
    assert m["per_class"]["a"]["accuracy"] == 0.5 and m["per_class"]["f"]["accuracy"] == 1.0
    assert m["worst_class_accuracy"] == 0.0 and set(m["per_class"]) == {"a", "c", "f"}
    assert classification(scores, np.full(4, -1), names) == {"images": 0}


def test_class_drops_paired_test():
    labels = np.array([0] * 10 + [1] * 10)
    ref = np.eye(2)[labels] * 5
    cand = ref.copy()
    cand[:4] = [0, 5]  # class 0 loses 4 of 10 images
    cand[10] = [5, 0]  # class 1 loses 1
    rows = class_drops(classification(cand, labels, ["x", "y"]), classification(ref, labels, ["x", "y"]))
    assert [r["class"] for r in rows] == ["x", "y"]
    assert rows[0]["drop_pts"] == 40.0 and rows[0]["drop_images"] == 4 and rows[0]["lost"] == 4
    assert rows[0]["p_value"] == sign_test_p(4, 0) == 1 / 16
    assert rows[1]["p_value"] == 0.5  # one lost image is noise


def test_parity_statistics():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 10))
    p = parity(ref.copy(), ref)
    assert p["max_abs"] == 0 and p["top1_agreement"] == 1 and abs(p["cosine_min"] - 1) < 1e-12 and p["mean_kl"] < 1e-12
    cand = ref + rng.normal(scale=0.5, size=ref.shape)
    q = parity(cand, ref)
    assert 0 < q["top1_agreement"] < 1 and q["mean_kl"] > 0 and q["cosine_min"] < 1
    probs = np.abs(ref) / np.abs(ref).sum(1, keepdims=True)
    assert parity(probs, probs, "softmax")["mean_kl"] < 1e-9


def test_worst_class_drop_is_one_rule_for_compress_validate_compare_and_tune():
    """A model that only gained accuracy has no worst-class *drop* (the compress report once showed −10 pt)."""
    from edgefg.compress.api import _row
    from edgefg.validate.metrics import significant_drop_count, worst_class_drop

    labels = np.array([0] * 10 + [1] * 10)
    ref_scores = np.eye(2)[labels] * 5
    ref_scores[:2] = [0, 5]  # the reference misses 2 images of class x
    better = np.eye(2)[labels] * 5  # the candidate gets them right: x gains 20 pt, y stays
    names = ["x", "y"]
    ref, cand = classification(ref_scores, labels, names), classification(better, labels, names)
    drops = class_drops(cand, ref)
    assert drops[0]["drop_pts"] == 0.0 and round(drops[-1]["drop_pts"], 6) == -20.0
    assert worst_class_drop(drops) == (0.0, None) and significant_drop_count(drops, 0.05) == 0
    row = _row("int8", {}, {"p50": 1.0, "p90": 1.0}, cand, ref)
    assert row["worst_class_drop"] == 0.0 and row["worst_class"] is None
    worse = class_drops(ref, cand)
    assert round(worst_class_drop(worse)[0], 6) == 20.0 and worst_class_drop(worse)[1] == "x"
