"""edgefg enroll: classes added to a deployed bundle from a few images, prototypes beside the trained head."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgefg.cli import cli
from tests.conftest import CLASSES, write_image_folder

NEW = ["Magenta_Square", "Yellow_Disc"]


def new_image(rng: np.random.Generator, cls: int, size: int = 96) -> np.ndarray:
    """New classes unlike the trained ones: a filled disc or square at a random place over noise."""
    img = (rng.random((size, size, 3)) * 60 + 90).astype(np.uint8)
    c = (int(rng.integers(30, 66)), int(rng.integers(30, 66)))
    if cls == 0:
        cv2.rectangle(img, (c[0] - 16, c[1] - 16), (c[0] + 16, c[1] + 16), (200, 40, 200), -1)
    else:
        cv2.circle(img, c, 18, (40, 200, 200), -1)
    return img


def write_new(root: Path, per_class: int, seed: int, classes=NEW) -> Path:
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:03d}.jpg"), new_image(rng, ci))
    return root


def tree_hash(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def emb_bundles(tmp_path_factory, tiny_artifacts, image_folder) -> dict[str, Path]:
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("emb")
    return {f"{p}-{t}": deploy(a, t, root / f"{p}-{t}", embedding=True, data=image_folder).directory
            for p, a in tiny_artifacts.items() for t in ("intel-cpu", "onnxruntime-cpu")}


@pytest.fixture(scope="module")
def enrol_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("enrol")
    return {"enrol": write_new(root / "enrol", 5, 1), "held": write_new(root / "held", 8, 2),
            "old_held": write_image_folder(root / "old_held", per_class=6, seed=7)}


def predict(bundle: Path, folder: Path) -> tuple[np.ndarray, list[str], list]:
    from edgefg.calibration.dataset import scan
    from edgefg.runtime.engine.bundle import LoadedBundle

    with LoadedBundle(bundle) as lb:
        s = scan(folder).samples
        scores = lb.classify([cv2.imread(str(x.path)) for x in s])
        assert scores.shape == (len(s), len(lb.labels))
        return scores.argmax(1), lb.labels, s


def run(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_deploy_embedding_output_recorded_and_parity_checked(emb_bundles):
    from edgefg.manifest import load_manifest

    for name, b in emb_bundles.items():
        m = load_manifest(b)
        assert [o.role for o in m.outputs] == [None, "embedding"], name
        assert m.outputs[1].shape[-1] == m.parity["embedding"]["width"] > 0
        assert m.parity["embedding"]["cosine_min"] > 0.99, (name, m.parity["embedding"])
        assert m.parity["top1_agreement"] >= 0.9
        assert "embedding_reference.npz" in m.files


def check_enrolment(src, sets, reference_images, out) -> None:
    """Enrol ``sets['enrol']`` on bundle ``src`` into ``out``: the input is untouched, every old-class image
    (reference and held-out) keeps its prediction, held-out images of the new classes are well above chance."""
    before = tree_hash(src)
    r = run("enroll", src, "--images", sets["enrol"], "-o", out)
    assert r.exit_code == 0, r.output
    assert tree_hash(src) == before  # the input bundle is never modified
    for folder in (reference_images, sets["old_held"]):  # reference images and held-out images of trained classes
        old, _, _ = predict(src, folder)
        new, labels, _ = predict(out, folder)
        assert labels == CLASSES + NEW
        assert (old == new).all(), (src, folder.name, old, new)
    pred, labels, samples = predict(out, sets["held"])
    acc = float(np.mean([labels[p] == NEW[s.label] for p, s in zip(pred, samples)]))
    assert acc > 2 / len(labels), (src, acc)  # well above chance over the 5 labels


@pytest.mark.parametrize("name", ["fp32-intel-cpu", "int8-intel-cpu", "fp32-onnxruntime-cpu", "int8-onnxruntime-cpu"])
def test_enrol_adds_classes_and_keeps_old_predictions(emb_bundles, enrol_dirs, image_folder, tmp_path, name):
    check_enrolment(emb_bundles[name], enrol_dirs, image_folder, tmp_path / "enrolled")


def test_reenrol_remove_and_mask(emb_bundles, enrol_dirs, tmp_path):
    from edgefg.manifest import load_manifest

    src = emb_bundles["fp32-onnxruntime-cpu"]
    one = tmp_path / "one"
    assert run("enroll", src, "--images", enrol_dirs["enrol"], "-o", one).exit_code == 0
    m1 = load_manifest(one)
    # re-enrolment with more images replaces the prototype (no duplicate label)
    two = tmp_path / "two"
    r = run("enroll", one, "--images", enrol_dirs["held"], "-o", two)
    assert r.exit_code == 0, r.output
    m2 = load_manifest(two)
    assert m2.labels == m1.labels and m2.release >= m1.release
    assert m2.prototypes["fit"]["images"] == 16  # the held set's 8 + 8 replaced the 5 + 5
    # --remove an enrolled class drops it; --remove a trained class masks it, and it can be enrolled back
    three = tmp_path / "three"
    back = write_new(tmp_path / "back", 4, 3, classes=[CLASSES[0]])
    r = run("enroll", two, "--remove", NEW[0], "--remove", CLASSES[0], "--images", back, "-o", three)
    assert r.exit_code == 0, r.output
    m3 = load_manifest(three)
    assert m3.labels == CLASSES[1:] + [NEW[1], CLASSES[0]]
    assert m3.prototypes["removed"] == [CLASSES[0]] and m3.prototypes["head_labels"] == CLASSES
    _, labels, _ = predict(three, enrol_dirs["held"])
    assert labels == m3.labels


def _error_case(kind: str, tmp_path: Path, emb_bundles, tiny_bundles, enrol_dirs) -> tuple[Path, Path]:
    bundle = emb_bundles["int8-intel-cpu"]
    images = tmp_path / "imgs"
    if kind == "existing":
        write_new(images, 3, 4, classes=[CLASSES[1]])
    elif kind == "empty":
        write_new(images, 3, 4)
        (images / "Empty_Class").mkdir()
    elif kind == "single":
        write_new(images, 3, 4)
        write_new(images, 1, 5, classes=["Lonely_Bird"])
    elif kind == "no-embedding":
        write_new(images, 3, 4)
        bundle = tiny_bundles["fp32-onnxruntime-cpu"]
    elif kind == "corrupt":
        write_new(images, 3, 4)
        (images / NEW[0] / "001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return bundle, images


@pytest.mark.parametrize("kind", ["existing", "empty", "single", "no-embedding", "corrupt"])
def test_enrol_errors_are_one_line_and_leave_the_input(kind, emb_bundles, tiny_bundles, enrol_dirs, tmp_path):
    bundle, images = _error_case(kind, tmp_path, emb_bundles, tiny_bundles, enrol_dirs)
    before = tree_hash(bundle)
    out = tmp_path / "out"
    r = run("enroll", bundle, "--images", images, "-o", out)
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    assert not out.exists()
    assert tree_hash(bundle) == before


def test_enrolled_bundle_verifies_under_trust_only_when_resigned(emb_bundles, enrol_dirs, tmp_path):
    from edgefg.errors import BundleError
    from edgefg.manifest import load_manifest
    from edgefg.trust.bundle_signing import sign_bundle
    from edgefg.trust.signing import generate_keypair

    key, pub = generate_keypair(tmp_path / "keys")
    signed = tmp_path / "signed"
    shutil.copytree(emb_bundles["fp32-intel-cpu"], signed)
    sign_bundle(signed, key)
    load_manifest(signed, trust=[pub])
    unsigned = tmp_path / "unsigned"
    assert run("enroll", signed, "--images", enrol_dirs["enrol"], "-o", unsigned).exit_code == 0
    with pytest.raises(BundleError):
        load_manifest(unsigned, trust=[pub])  # the input's signature was not carried over
    resigned = tmp_path / "resigned"
    r = run("enroll", signed, "--images", enrol_dirs["enrol"], "-o", resigned, "--sign", key)
    assert r.exit_code == 0, r.output
    assert load_manifest(resigned, trust=[pub]).labels == CLASSES + NEW
    load_manifest(signed, trust=[pub])  # the input still verifies


def test_output_may_not_be_the_input(emb_bundles, enrol_dirs):
    src = emb_bundles["fp32-onnxruntime-cpu"]
    before = tree_hash(src)
    r = run("enroll", src, "--images", enrol_dirs["enrol"], "-o", src, "--force")
    assert r.exit_code == 2 and tree_hash(src) == before


def test_softmax_head_combines_in_log_space():
    from types import SimpleNamespace

    from edgefg.runtime.engine.prototypes import PrototypeHead

    head = PrototypeHead.__new__(PrototypeHead)
    head.activation, head.keep, head.all_kept = "softmax", np.array([0, 2]), False
    head.temperature, head.bias, head.centre = 10.0, 0.0, None
    head.prototypes = np.array([[1.0, 0.0]], np.float32)
    p = head.combine(np.array([[0.7, 0.2, 0.1]], np.float32), np.array([[1.0, 0.0]], np.float32))
    assert p.shape == (1, 3) and abs(p.sum() - 1) < 1e-5 and p.argmax() == 2
    del SimpleNamespace


def test_drift_profile_of_the_old_labels_is_left_out(emb_bundles, enrol_dirs, tmp_path):
    from edgefg.manifest import load_manifest
    from edgefg.runtime.outputs.drift_profile import PROFILE_NAME

    src = emb_bundles["fp32-onnxruntime-cpu"]
    assert PROFILE_NAME in load_manifest(src).files
    out = tmp_path / "out"
    r = run("enroll", src, "--images", enrol_dirs["enrol"], "-o", out)
    assert r.exit_code == 0 and "drift reference" in r.output, r.output
    assert PROFILE_NAME not in load_manifest(out).files and not (out / PROFILE_NAME).exists()


def test_reference_images_of_a_masked_class_leave_the_fit():
    from edgefg.enroll import _without_masked

    ref = {"embeddings": np.eye(4, dtype=np.float32), "head_scores": np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [0, 3, 1]], np.float32)}
    kept = _without_masked(ref, CLASSES, [CLASSES[1]])
    assert kept is not None and kept["embeddings"].tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]
    assert _without_masked(ref, CLASSES, []) is ref
    assert _without_masked({k: v[1:2] for k, v in ref.items()}, CLASSES, [CLASSES[1]]) is None
