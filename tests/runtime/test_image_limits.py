"""Bounded decoding: the pixel count comes from the header, before decoding; an over-limit image is
skipped and counted like a corrupt one (validation, calibration, image sources); memory stays bounded."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefg.errors import DataError, EdgefgError
from edgefg.runtime.engine.image_limits import ImageTooLargeError, image_size, max_pixels, read_limited, set_max_pixels
from edgefg.runtime.engine.preprocess import read_image

FORMATS = [".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".pgm"]


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of width×height zeros: a few hundred KB on disk, width×height×3 bytes decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("ext", FORMATS)
def test_header_size_matches_decoded_size(tmp_path, ext):
    img = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), img if ext != ".pgm" else img[:, :, 0])
    with open(path, "rb") as fh:
        w, h, _ = image_size(fh)
    assert (w, h) == (53, 37)
    assert read_image(path).shape == (37, 53, 3)
    with pytest.raises(ImageTooLargeError, match="limit"):
        read_image(path, max_pixels=53 * 37 - 1)
    assert read_image(path, max_pixels=53 * 37).shape == (37, 53, 3)


def test_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 9000, 9000)  # 81 MP > 40 MP default
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ImageTooLargeError, match="9000×9000"):
        read_image(bomb)
    assert isinstance(ImageTooLargeError("x"), DataError)  # so every caller skips it like a corrupt image


def test_limit_from_env_and_setter(monkeypatch):
    monkeypatch.setenv("EDGEFG_MAX_PIXELS", "123")
    assert max_pixels() == 123
    set_max_pixels(7)
    try:
        assert max_pixels() == 7
    finally:
        set_max_pixels(None)
    for bad in ("-1", "lots", "1e99"):
        monkeypatch.setenv("EDGEFG_MAX_PIXELS", bad)
        with pytest.raises(EdgefgError, match="EDGEFG_MAX_PIXELS"):
            max_pixels()


def test_unknown_and_damaged_headers_are_unreadable_not_crashes(tmp_path):
    for name, data in {"text.jpg": b"hello world" * 10, "empty.png": b"", "short.png": b"\x89PNG\r\n\x1a\n",
                       "trunc.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF", "tiff.tif": b"II*\x00\xff\xff\xff\x7f"}.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DataError):
            read_image(p)


MEMORY_PROBE = r"""
import sys
from pathlib import Path
from edgefg.runtime.engine.preprocess import read_image
from edgefg.errors import DataError

def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would start at the parent's, inherited across exec)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

path, limit = sys.argv[1], int(sys.argv[2])
before = peak_mb()
try:
    read_image(path, max_pixels=limit)
    outcome = "decoded"
except DataError:
    outcome = "refused"
print(outcome, peak_mb() - before)
"""


def test_pixel_limit_bounds_memory(tmp_path):
    """Peak RSS growth of a process reading an 81 MP PNG bomb (600 KB): refused under the default
    40 MP limit → a few MB; with the limit off the same file costs ≥ 200 MB (the control that
    shows the probe measures decoding)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak RSS is read from /proc/self/status (Linux)")
    bomb = png_bomb(tmp_path / "bomb.png", 9000, 9000)

    def probe(limit: int) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(bomb), str(limit)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        outcome, mb = out.stdout.split()
        return outcome, float(mb)

    refused, refused_mb = probe(40_000_000)
    assert refused == "refused" and refused_mb < 20, refused_mb
    decoded, decoded_mb = probe(0)
    assert decoded == "decoded" and decoded_mb > 200, decoded_mb


def test_over_limit_images_are_skipped_and_counted_by_validate_and_run(tmp_path):
    pytest.importorskip("onnxruntime")
    from tests.trust.conftest import edgefg, make_bundle

    bundle = make_bundle(tmp_path / "b")
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        cv2.imwrite(str(data / cls / "ok.png"), np.full((20, 20, 3), 100, np.uint8))
    png_bomb(data / "a" / "bomb.png", 3000, 3000)
    v = edgefg("validate", bundle, "--data", data, "--max-pixels", "1000000", "--json", tmp_path / "v.json")
    assert v.returncode == 0, v.stderr
    import json

    result = json.loads((tmp_path / "v.json").read_text())
    assert result["images"] == 2 and result["skipped_corrupt"] == 1
    r = edgefg("run", bundle, "--source", data / "a", "--max-pixels", "1000000")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "1 unreadable skipped" in r.stderr
    bad = edgefg("run", bundle, "--source", data / "a", env={"EDGEFG_MAX_PIXELS": "many"})
    assert bad.returncode == 2 and "EDGEFG_MAX_PIXELS" in bad.stderr and "Traceback" not in bad.stderr


def test_read_limited_returns_the_file_bytes(tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), np.zeros((4, 4, 3), np.uint8))
    assert read_limited(p).tobytes() == p.read_bytes()


def test_video_frames_over_the_limit_are_refused_when_the_source_opens(tmp_path):
    from edgefg.errors import SourceError
    from edgefg.runtime.capture.sources import open_source

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), 128, np.uint8))
    writer.release()
    assert len(list(open_source(str(path)))) == 3
    set_max_pixels(64 * 48 - 1)
    try:
        with pytest.raises(SourceError, match="64×48 frames"):
            open_source(str(path))
    finally:
        set_max_pixels(None)
