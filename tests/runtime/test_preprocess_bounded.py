"""Preprocessing memory is bounded by the crop, not by the image's aspect ratio (issue 26, class 1).

A 2×16000 PNG (96 KB) used to be resized short-side-first to 224×1 792 000 pixels before the crop:
5 GB peak RSS and 14 s with the pil resizer, 1.8 GB with opencv. Each path that preprocesses images
(camera/runtime frames, calibration and validation batches, compress's evaluation dataset) is run
in a child process that measures its own peak RSS, after a 224×224 baseline in the same child.
"""
import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from edgefg.manifest import Preprocess
from edgefg.runtime.engine import preprocess as pp

CHILD = textwrap.dedent(
    r'''
    import json, resource, sys, time, types
    from pathlib import Path
    import cv2, numpy as np
    from edgefg.calibration.dataset import iter_batches, scan
    from edgefg.manifest import Preprocess
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.runtime.capture.sources import ImageListSource

    root, resize, only = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    spec = Preprocess(input_size=(224, 224), crop_pct=0.875, resize=resize, interpolation="bicubic")
    bundle = types.SimpleNamespace(manifest=types.SimpleNamespace(preprocess=spec))

    def runtime(folder):  # camera/image-folder frames: the source decodes, the bundle prepares
        frames = list(ImageListSource(str(folder), sorted((folder / "c").iterdir())))
        assert all(f.image is not None for f in frames)
        return [LoadedBundle.prepare(bundle, f.image) for f in frames]

    def calibration(folder):  # calibration and validate batches
        return [x for b in iter_batches(scan(folder).samples, spec, 1) for x in b.x]

    paths = {"runtime": runtime, "calibration": calibration}
    try:
        from edgefg.compress.data import ImageDataset

        def compress(folder):  # compress's evaluation data (torch)
            ds = ImageDataset(scan(folder).samples, spec)
            return [ds[i][0].numpy() for i in range(len(ds))]

        paths["compress"] = compress
    except ImportError:
        pass
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: KB)
    out = {}
    for name, fn in paths.items():
        if name != only:  # one path per child: ru_maxrss never goes down
            continue
        for case in ("base", "wide", "tall"):
            t = time.perf_counter()
            x = fn(root / case)  # a data root with one class folder 'c'
            assert len(x) == 1 and x[0].shape == (3, 224, 224), [a.shape for a in x]
            out[f"{name}:{case}"] = (rss(), time.perf_counter() - t)
    print(json.dumps(out))
    '''
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for case, hw in {"base": (224, 224), "wide": (2, 16000), "tall": (16000, 2)}.items():
        (root / case / "c").mkdir(parents=True)
        cv2.imwrite(str(root / case / "c" / "x.png"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize("resize,path", list(itertools.product(["pil", "opencv"], ["runtime", "calibration", "compress"])))
def test_thin_strips_preprocess_in_bounded_memory_on_every_path(shapes, resize, path):
    if path == "compress":
        pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(shapes), resize, path], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k.split(":")[0] for k in out} == {path}
    for name in (path,):
        base = out[f"{name}:base"][0]
        for case in ("wide", "tall"):
            peak, seconds = out[f"{name}:{case}"]
            assert peak - base < 300, f"{name} {case} ({resize}): peak RSS {peak:.0f} MB, {peak - base:.0f} MB above the 224×224 baseline"
            assert seconds < 5, f"{name} {case} ({resize}): {seconds:.1f} s"


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 3 + yy * 40) % 256, (yy * 50 + xx) % 256, (xx * 7) % 256], -1).astype(np.float32)
    return np.clip(base + np.random.default_rng(seed).normal(0, 10, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(224, 224), (480, 640), (1080, 1920), (640, 480), (50, 41), (97, 333), (300, 4000), (64, 900), (1, 14)])
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_photos_and_frames_take_the_exact_path(monkeypatch, hw, crop_mode):
    """Normal shapes (and small or downscaled strips) keep the resize-then-crop path bit for bit:
    the fidelity tests against timm (tests/validate/test_preprocess_check.py) stay exact."""
    monkeypatch.setattr(pp, "_resize_crop_region", lambda *a: pytest.fail(f"{hw} took the region path"))
    spec = Preprocess(input_size=(224, 224), crop_pct=0.875, resize="pil", interpolation="bicubic", crop_mode=crop_mode)
    img = _image(*hw)
    rh, rw = pp.resize_size(hw, spec)
    fill = pp.border_fill(spec) if crop_mode == "border" else (0, 0, 0)
    np.testing.assert_array_equal(pp.geometry(img, spec), pp._center_crop_or_pad(pp._resize(img, (rh, rw), spec), (224, 224), fill))


KERNELS = {"pil": ["bilinear", "bicubic", "lanczos", "hamming"], "opencv": ["bilinear", "bicubic", "area"]}


@pytest.mark.parametrize("resize,interpolation", [(r, i) for r, v in KERNELS.items() for i in v] + [("pil", "nearest"), ("opencv", "nearest")])
def test_region_path_matches_resize_then_crop(monkeypatch, resize, interpolation):
    """Strips small enough to resize whole: the region path gives what resize-then-crop gives
    (pil: to float rounding of the kernel positions; opencv: within its declared approximation)."""
    calls = []
    real = pp._resize_crop_region
    monkeypatch.setattr(pp, "_resize_crop_region", lambda *a: (calls.append(a[1]), real(*a))[1])
    worst_mean = worst_max = 0.0
    for (h, w), size, crop_pct in itertools.product([(3, 200), (200, 3), (7, 500), (1, 97), (2, 1600), (1600, 2), (5, 300)],
                                                   [(32, 32), (24, 40), (40, 24)], [0.875, 1.0]):
        spec = Preprocess(input_size=size, crop_pct=crop_pct, resize=resize, interpolation=interpolation)
        img = _image(h, w)
        rh, rw = pp.resize_size((h, w), spec)
        got = pp.geometry(img, spec)
        want = pp._center_crop_or_pad(pp._resize(img, (rh, rw), spec), size, (0, 0, 0))
        assert got.shape == want.shape == (*size, 3)
        d = np.abs(got.astype(int) - want)
        worst_mean, worst_max = max(worst_mean, float(d.mean())), max(worst_max, float(d.max()))
    assert len(calls) == 42  # every case took the region path
    if interpolation == "nearest":  # a sample on a pixel boundary may go either way: a few pixels
        assert worst_mean < 1.0
    elif resize == "pil":
        assert worst_max <= 2 and worst_mean < 0.2, (worst_max, worst_mean)
    else:
        assert worst_mean < 1.0, (worst_max, worst_mean)


def test_region_path_pads_like_the_crop():
    """Where the resized size is under the crop on one axis (pad, then crop), the region path pads
    the same rows with the same fill."""
    img = _image(2, 400)
    spec = Preprocess(input_size=(40, 40), crop_pct=1.0, resize="pil", interpolation="bilinear")
    got = pp._resize_crop_region(img, (30, 6000), spec, (9, 8, 7))
    want = pp._center_crop_or_pad(pp._resize(img, (30, 6000), spec), (40, 40), (9, 8, 7))
    assert got.shape == (40, 40, 3)
    assert (got[:5] == (9, 8, 7)).all() and (got[35:] == (9, 8, 7)).all()
    assert np.abs(got.astype(int) - want).max() <= 2


@pytest.mark.parametrize("hw", [(2, 16000), (16000, 2), (1, 40000)])
def test_drift_signals_of_a_thin_strip_are_bounded(hw, monkeypatch):
    """The drift monitor's input signals scale the short side to SIGNAL_SIDE: a thin strip's long
    side is cropped first (else 2×16000 → 128×1 024 000 grey pixels and a float Laplacian of them)."""
    from edgefg.runtime.outputs.drift_profile import SIGNAL_MAX_ASPECT, SIGNAL_SIDE, input_signals, signal_image

    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    g = signal_image(img)
    assert min(g.shape) == SIGNAL_SIDE and max(g.shape) <= SIGNAL_MAX_ASPECT * SIGNAL_SIDE + 1
    lum, sharp = input_signals(img)
    assert 0 <= lum <= 255 and sharp >= 0
    normal = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ours = signal_image(normal)
    monkeypatch.setattr("edgefg.runtime.outputs.drift_profile.SIGNAL_MAX_ASPECT", 10**9)
    np.testing.assert_array_equal(ours, signal_image(normal))  # photos and frames: unchanged


def test_the_timm_preprocessing_check_leaves_thin_strips_out(tmp_path, caplog):
    """validate --check-preprocess runs timm's own transform, which resizes whole: a thin strip is
    left out of that comparison with a warning (not 5 GB), the others are still compared exactly."""
    pytest.importorskip("timm")
    from edgefg.models.loader import timm_data_config
    from edgefg.validate.preprocess_check import check_preprocess

    spec = Preprocess(input_size=(64, 64), crop_pct=0.875, resize="pil", interpolation="bicubic")
    normal, strip = tmp_path / "n.png", tmp_path / "s.png"
    cv2.imwrite(str(normal), _image(80, 100))
    cv2.imwrite(str(strip), _image(2, 16000))
    check = check_preprocess(spec, [normal, strip], model_config=timm_data_config(spec))
    assert check.images == 1 and check.max_abs < 0.01
    assert any("thin-strip" in r.getMessage() and "s.png" in r.getMessage() for r in caplog.records)


def test_integer_samples_without_a_quant_scale_are_a_data_error_not_a_type_error():
    from edgefg.errors import DataError

    src = Preprocess(input_size=(8, 8), dtype="int8", layout="NHWC", quant_scale=None, quant_zero_point=0)
    dst = Preprocess(input_size=(8, 8), dtype="float32", layout="NCHW")
    with pytest.raises(DataError, match="quant_scale"):
        pp.convert_batch(np.zeros((1, 8, 8, 3), np.int8), src, dst)
    ok = dataclasses.replace(src, quant_scale=0.5)
    assert pp.convert_batch(np.full((1, 8, 8, 3), 2, np.int8), ok, dst).shape == (1, 3, 8, 8)
