"""Images decoded once and augmented on the training device (compress/device_data.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from edgefg.calibration.dataset import Sample, scan  # noqa: E402
from edgefg.compress import device_data  # noqa: E402
from edgefg.compress.device_data import augment, cache_images, cache_side  # noqa: E402
from edgefg.compress.train import TrainConfig, train  # noqa: E402
from edgefg.manifest import Preprocess  # noqa: E402

SPEC = Preprocess(input_size=(64, 64), crop_pct=0.8, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def test_cache_holds_each_readable_image_once_as_a_square(image_folder, tmp_path, caplog):
    device_data._MEMO.clear()
    samples = list(scan(image_folder).samples)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    samples.append(Sample(path=bad, label=0))
    with caplog.at_level(logging.WARNING):
        cached = cache_images(samples, SPEC)
    assert cache_side(SPEC) == 80
    assert cached.images.dtype == torch.uint8 and tuple(cached.images.shape[1:]) == (3, 80, 80)
    assert len(cached) == len(samples) - 1 and "broken.jpg" in caplog.text  # skipped, said so, the rest kept
    assert cached.labels.tolist() == [s.label for s in samples[:-1]]
    assert cache_images(samples, SPEC) is cached  # decoded once for repeated training calls


def test_cache_without_readable_images_is_a_clear_error(tmp_path):
    from edgefg.errors import DataError

    bad = tmp_path / "a.jpg"
    bad.write_bytes(b"x")
    with pytest.raises(DataError, match="no readable training images"):
        cache_images([Sample(path=bad, label=0)], SPEC)
    with pytest.raises(DataError, match="labelled"):
        cache_images([Sample(path=bad, label=None)], SPEC)


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_unaugmented_batch_is_the_runtime_evaluation_preprocessing(tmp_path, crop_mode):
    """The cache keeps the model's geometry: without augmentation a batch is what the runtime feeds the model."""
    import cv2

    from edgefg.compress.device_data import centre
    from edgefg.runtime.engine.preprocess import preprocess, read_image

    device_data._MEMO.clear()
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"  # 4:3 and smooth, so resampling differences stay small; png: lossless
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 3))
    spec = Preprocess(**{**SPEC.__dict__, "crop_mode": crop_mode, "resize": "opencv"})
    cached = cache_images([Sample(path=path, label=0)], spec)
    got = centre(cached.images, spec)[0].numpy()
    want = preprocess(read_image(path), spec)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4  # the same pixels: same resize, same crop (or pad), same normalisation


def test_identity_augmentation_is_the_normalised_square_and_flip_mirrors_it():
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    plain = augment(img, SPEC, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0)
    assert plain.shape == (2, 3, 64, 64)
    assert torch.allclose(plain, (img.float() / 255 - 0.5) / 0.25, atol=1e-4)  # same size, whole square: the pixels themselves
    flipped = augment(img, SPEC, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, jitter=0.0)
    assert torch.allclose(flipped, plain.flip(3), atol=1e-4)
    bgr = augment(img, Preprocess(**{**SPEC.__dict__, "color": "BGR"}), _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0)
    assert torch.allclose(bgr, plain.flip(1), atol=1e-4)


def test_random_crops_stay_inside_the_image_and_follow_the_seed():
    # left half black, right half white: a crop of a quarter of the area inside the image is never grey-padded
    img = torch.zeros(64, 3, 80, 80, dtype=torch.uint8)
    img[..., 40:] = 255
    out = augment(img, SPEC, _gen(1), scale=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0) * 0.25 + 0.5
    assert out.min() >= -1e-4 and out.max() <= 1 + 1e-4
    frac_white = (out[:, 0] > 0.5).float().mean(dim=(1, 2))
    assert frac_white.min() < 0.05 and frac_white.max() > 0.95  # crops land wholly in either half, and in between
    again = augment(img, SPEC, _gen(1), scale=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0) * 0.25 + 0.5
    other = augment(img, SPEC, _gen(2), scale=(0.25, 0.25), ratio=(1.0, 1.0), hflip=0.0, jitter=0.0) * 0.25 + 0.5
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_training_from_the_device_cache_learns_and_resumes(tmp_path, image_folder):
    import timm

    device_data._MEMO.clear()
    samples = scan(image_folder).samples

    def model():
        torch.manual_seed(0)
        return timm.create_model("test_efficientnet", num_classes=3)

    m = model()
    res = train(m, samples, SPEC, TrainConfig(epochs=6, lr=3e-3, batch_size=6, data_on_device=True, freeze_bn=False))
    assert res.steps == 18 and res.history[-1]["loss"] < res.history[0]["loss"]
    # resume: without augmentation the batches are a pure function of (seed, epoch, index)
    cfg = dict(epochs=2, lr=1e-3, batch_size=6, augment=False, data_on_device=True, seed=0)
    straight = model()
    train(straight, samples, SPEC, TrainConfig(**cfg, max_steps=3, checkpoint_dir=tmp_path / "a"))
    first = model()
    train(first, samples, SPEC, TrainConfig(**cfg, max_steps=1, checkpoint_dir=tmp_path / "b", checkpoint_every=1))
    resumed = model()
    res2 = train(resumed, samples, SPEC, TrainConfig(**cfg, max_steps=3, checkpoint_dir=tmp_path / "b"))
    assert res2.resumed_from_step == 1
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run where one is lent)")
def test_device_cache_on_cuda(image_folder):
    import timm

    samples = scan(image_folder).samples
    m, teacher = timm.create_model("test_efficientnet", num_classes=3), timm.create_model("test_efficientnet", num_classes=3)
    res = train(m, samples, SPEC, TrainConfig(max_steps=3, batch_size=4, device="cuda", amp=True, data_on_device=True), teacher=teacher,
                student_size=(48, 48))
    assert res.steps == 3 and next(m.parameters()).device.type == "cpu"
    assert cache_images(samples, SPEC, torch.device("cuda")).images.device.type == "cuda"
