import cv2
import numpy as np
import pytest

from edgefg.calibration.dataset import iter_batches, scan, stratified_subset
from edgefg.errors import ClassMismatchError, DataError, InputPathError
from edgefg.manifest import Preprocess
from tests.conftest import CLASSES, write_image_folder


def test_classes_map_by_name_not_sorted_order(image_folder):
    labels = list(reversed(CLASSES)) + ["Other"]
    data = scan(image_folder, labels)
    assert data.labelled and len(data.samples) == 18
    for s in data.samples:
        assert labels[s.label] == s.path.parent.name


def test_class_mismatch_lists_differences(image_folder):
    with pytest.raises(ClassMismatchError) as err:
        scan(image_folder, ["Acadian_Flycatcher", "Least_Flycatcher", "Alder_Flycatcher"])
    assert "Willow_Flycatcher" in str(err.value) and "Alder_Flycatcher" in str(err.value)


def test_missing_flat_empty_and_non_images(tmp_path):
    with pytest.raises(InputPathError):
        scan(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        scan(tmp_path)
    root = write_image_folder(tmp_path / "d", per_class=2)
    (root / CLASSES[0] / "README.md").write_text("not an image")
    data = scan(root, CLASSES)
    assert len(data.samples) == 6 and [p.name for p in data.ignored] == ["README.md"]
    (root / "Empty_Class").mkdir()
    with pytest.raises(DataError, match="Empty_Class"):
        scan(root)


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    data = scan(tmp_path)
    assert not data.labelled and all(s.label is None for s in data.samples)


def test_stratified_subset_covers_every_class(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    root = write_image_folder(tmp_path / "d", per_class=5, classes=classes)
    data = scan(root, classes)
    subset = stratified_subset(data.samples, 10, seed=1)
    assert sorted(s.label for s in subset) == list(range(10))
    subset = stratified_subset(data.samples, 23, seed=1)
    counts = np.bincount([s.label for s in subset], minlength=10)
    assert len(subset) == 23 and counts.min() >= 2 and counts.max() <= 3


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=2)
    (root / CLASSES[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    data = scan(root, CLASSES)
    skipped = []
    batches = list(iter_batches(data.samples, Preprocess(input_size=(16, 16), crop_pct=1.0), 4, skipped))
    assert sum(len(b.paths) for b in batches) == 6
    assert [p.name for p in skipped] == ["broken.jpg"]
