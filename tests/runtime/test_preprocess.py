import cv2
import numpy as np
import pytest

from edgefg.errors import DataError
from edgefg.manifest import Preprocess
from edgefg.runtime.engine.preprocess import geometry, preprocess, read_image


def test_resize_crop_normalise_matches_hand_computation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)  # BGR, wide
    spec = Preprocess(input_size=(16, 16), crop_pct=0.8, resize="opencv", interpolation="bilinear", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x = preprocess(img, spec)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    resized = cv2.resize(img, (40, 20), interpolation=cv2.INTER_LINEAR)  # shorter side 40 -> 20
    crop = resized[2:18, 12:28]
    rgb = crop[:, :, ::-1].astype(np.float32) / 255
    expected = ((rgb - np.array([0.5, 0.4, 0.3], np.float32)) / np.array([0.2, 0.25, 0.3], np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_nhwc_and_integer_input():
    img = np.full((10, 10, 3), 200, np.uint8)
    spec = Preprocess(input_size=(10, 10), crop_pct=1.0, mean=(128 / 255,) * 3, std=(128 / 255,) * 3, layout="NHWC",
                      dtype="uint8", quant_scale=1 / 128, quant_zero_point=128)
    x = preprocess(img, spec)
    assert x.shape == (10, 10, 3) and x.dtype == np.uint8
    assert np.all(x == 200)  # (p-128)/128 quantised with scale 1/128, zp 128 is the raw pixel
    with pytest.raises(DataError, match="quant_scale"):
        preprocess(img, Preprocess(input_size=(10, 10), crop_pct=1.0, dtype="int8"))


def test_large_frames_are_area_filtered():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, ::2] = 255  # 1-pixel stripes alias badly under plain cubic down-scaling
    out = geometry(frame, Preprocess(input_size=(224, 224), crop_pct=1.0, resize="opencv"))
    assert out.shape == (224, 224, 3)
    plain = cv2.resize(frame, (398, 224), interpolation=cv2.INTER_CUBIC)[:, 87:311]
    assert abs(float(out.mean()) - 127.5) < 3
    assert out.std() < 0.3 * plain.std()  # far less aliasing than a plain cubic resize


def test_read_image_errors(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        read_image(bad)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError):
        read_image(empty)
