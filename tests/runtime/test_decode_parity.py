"""Decoding: edgefg's ``read_image`` sees the pixels timm's loader (PIL ``convert('RGB')``) sees."""

import numpy as np
import pytest
from PIL import Image

from edgefg.runtime.engine.preprocess import read_image


def _pil_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _ours_rgb(path):
    return read_image(path)[:, :, ::-1]


@pytest.fixture()
def rgb():
    yy, xx = np.mgrid[0:40, 0:60]
    return np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)


def _save(tmp_path, name, image: Image.Image, **kw):
    p = tmp_path / name
    image.save(p, **kw)
    return p


@pytest.mark.parametrize("mode,suffix", [("RGB", ".png"), ("L", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("P", ".png"),
                                         ("RGB", ".jpg"), ("L", ".jpg"), ("RGB", ".bmp"), ("RGB", ".webp")])
def test_decoded_pixels_match_pil(tmp_path, rgb, mode, suffix):
    im = Image.fromarray(rgb)
    if mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray((np.arange(40 * 60).reshape(40, 60) % 256).astype(np.uint8)))  # alpha is dropped, not composited
    elif mode != "RGB":
        im = im.convert(mode)
    kw = {"lossless": True} if suffix == ".webp" else {}
    p = _save(tmp_path, f"x{suffix}", im, **kw)
    np.testing.assert_array_equal(_ours_rgb(p), _pil_rgb(p))


def test_exif_orientation_is_not_applied(tmp_path, rgb):
    """timm (PIL) trains and evaluates on the stored pixels; so does edgefg, for every source."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    p = _save(tmp_path, "rot.jpg", Image.fromarray(rgb), exif=exif, quality=95)
    ours = _ours_rgb(p)
    assert ours.shape == (40, 60, 3)  # not rotated to 60×40
    np.testing.assert_array_equal(ours, _pil_rgb(p))


def test_cmyk_jpeg_matches_pil_within_rounding(tmp_path, rgb):
    p = _save(tmp_path, "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=100)
    diff = np.abs(_ours_rgb(p).astype(int) - _pil_rgb(p))
    assert diff.max() <= 2, diff.max()


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    import cv2

    img16 = (np.arange(40 * 60 * 3).reshape(40, 60, 3) * 20).astype(np.uint16)
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), img16)
    np.testing.assert_array_equal(read_image(p), (img16 >> 8).astype(np.uint8))
