"""Reports that agree with themselves: worst classes, compare's max rel, install's release names."""
import numpy as np

from edgefg.validate.compare import compare_markdown
from edgefg.validate.metrics import near_zero_note, parity
from edgefg.validate.report import validation_markdown


def _row(name, ref, acc, n=23):
    return {"class": name, "images": n, "reference_accuracy": ref, "accuracy": acc, "drop_pts": 100 * (ref - acc),
            "drop_images": round((ref - acc) * n), "p_value": 0.5}


def test_validate_worst_classes_shows_only_losers_worst_first():
    drops = [_row("improved", 0.8, 0.9), _row("small", 1.0, 0.9565), _row("same", 1.0, 1.0), _row("big", 0.9, 0.7)]
    md = validation_markdown({"bundle": "b", "data": "d", "images": 92, "class_drops": drops, "checks": [], "passed": True})
    table = md.split("## Classes that lost accuracy, worst first")[1]
    assert table.index("| big |") < table.index("| small |")
    assert "improved" not in table and "| same |" not in table
    md = validation_markdown({"bundle": "b", "data": "d", "images": 46, "class_drops": [_row("same", 1.0, 1.0), _row("up", 0.5, 1.0)],
                              "checks": [], "passed": True})
    assert "None of the 2 classes lost accuracy" in md


def test_compare_explains_a_huge_max_rel_from_near_zero_logits():
    ref = np.array([[12.0, 1e-4, -6.0], [8.0, 3.0, -2.0]], np.float32)
    cand = ref + np.array([[0.02, 0.05, -0.01], [0.01, 0.01, 0.0]], np.float32)
    par = parity(cand, ref)
    assert par["max_rel"] > 100 and abs(par["max_rel_ref_value"] - 1e-4) < 1e-6 and par["max_rel_sizable"] < 0.01
    note = near_zero_note(par)
    assert note and "near zero" in note and "max abs" in note
    assert near_zero_note(parity(ref * 1.001, ref)) is None  # a plain small error needs no note
    result = {"images": 2, "data": "d", "reference": "a", "output": "logits", "bundles": [
        {"bundle": "a", "target": "t", "precision": "fp32", "runtime": "ort", "parity": None, "checks": [], "passed": True},
        {"bundle": "b", "target": "t", "precision": "int8", "runtime": "ort", "parity": par, "checks": [], "passed": True}]}
    assert "Note — b: max rel" in compare_markdown(result)


def test_install_names_the_release_after_the_bundle_and_target(tiny_bundles, tmp_path):
    import shutil

    from edgefg.runtime.install import install_bundle

    bundle = shutil.copytree(tiny_bundles["int8-intel-cpu"], tmp_path / "birds")
    r = install_bundle(bundle, tmp_path / "dev")
    assert r.release.name.startswith("birds-intel-cpu-")
    named = shutil.copytree(tiny_bundles["int8-intel-cpu"], tmp_path / "birds-intel-cpu-v2")
    assert install_bundle(named, tmp_path / "dev").release.name.startswith("birds-intel-cpu-v2-")  # the target is not repeated
