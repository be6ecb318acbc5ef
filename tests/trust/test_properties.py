"""Property-based fuzzing (Hypothesis): no manifest and no image file may produce anything but a result
or an edgefg error (exit 2 for bad input, per errors.py) — never a traceback. Bounded to run in seconds."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgefg.errors import EdgefgError  # noqa: E402
from edgefg.manifest import load_manifest  # noqa: E402
from tests.trust.conftest import make_bundle  # noqa: E402

FAST = settings(max_examples=150, deadline=None, database=None, derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict]:
    b = make_bundle(tmp_path_factory.mktemp("prop") / "b")
    return b, json.loads((b / "manifest.json").read_text())


def _load(bundle: Path, text: str | bytes) -> None:
    (bundle / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        load_manifest(bundle, verify=True)
    except EdgefgError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message
        return
    # accepted by the schema: the runtime must then classify, or refuse with an edgefg error
    import numpy as np

    from edgefg.runtime.engine.bundle import LoadedBundle

    try:
        with LoadedBundle(bundle) as model:
            scores = model.classify([np.full((20, 30, 3), 90, np.uint8)])
        assert scores.shape == (1, len(model.labels))
    except EdgefgError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message


@FAST
@given(data=st.data())
def test_any_field_replaced_by_any_json_value(good, data):
    bundle, manifest = good
    paths = [p for p in _paths(manifest) if p]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(json_values)
    m = json.loads(json.dumps(manifest))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    _load(bundle, json.dumps(m))
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@FAST
@given(data=st.data())
def test_fields_removed_or_added(good, data):
    bundle, manifest = good
    m = json.loads(json.dumps(manifest))
    for key in data.draw(st.lists(st.sampled_from(sorted(m)), max_size=3)):
        m.pop(key, None)
    m.update(data.draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2)))
    _load(bundle, json.dumps(m))
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@FAST
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(good, raw):
    bundle, manifest = good
    _load(bundle, raw)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@FAST
@given(data=st.data())
def test_byte_flips_of_a_valid_manifest(good, data):
    bundle, manifest = good
    raw = bytearray(json.dumps(manifest).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _load(bundle, bytes(raw))
    (bundle / "manifest.json").write_text(json.dumps(manifest))


# -- image decoding ------------------------------------------------------------------------------
def _seeds(tmp: Path) -> list[bytes]:
    import cv2
    import numpy as np

    img = (np.random.default_rng(1).random((12, 10, 3)) * 255).astype(np.uint8)
    out = []
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        out.append(buf.tobytes())
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[bytes]:
    return _seeds(tmp_path_factory.mktemp("seeds"))


@settings(max_examples=300, deadline=None, database=None, derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_images_decode_or_are_refused(seeds, tmp_path_factory, data):
    """Header bytes (sizes!) and body bytes of real files mutated: read_image returns an H×W×3 image
    within the pixel limit, or raises DataError — nothing else."""
    from edgefg.errors import DataError
    from edgefg.runtime.engine.preprocess import read_image

    raw = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, min(len(raw) - 1, data.draw(st.sampled_from([40, 200, len(raw) - 1])))))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("img") / "x.img"
    path.write_bytes(bytes(raw))
    limit = 10_000
    try:
        image = read_image(path, max_pixels=limit)
    except DataError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] * image.shape[1] <= limit


@settings(max_examples=200, deadline=None, database=None, derandomize=bool(os.environ.get("CI")))
@given(raw=st.binary(max_size=200))
def test_random_bytes_are_never_decoded_blind(tmp_path_factory, raw):
    import io

    from edgefg.runtime.engine.image_limits import image_size

    try:
        w, h, _ = image_size(io.BytesIO(raw))
    except ValueError:
        return
    assert w >= 0 and h >= 0 and not math.isnan(w)


@settings(max_examples=40, deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_cli_on_mutated_manifests_exits_0_or_2_without_traceback(good, tmp_path_factory, data):
    """`edgefg run` and `edgefg install` (in-process, click's runner) on a manifest with one field
    replaced: exit 0 (still a valid bundle) or 2 with an `error:` line; never an uncaught exception."""
    import cv2
    import numpy as np
    from click.testing import CliRunner

    from edgefg.cli import cli

    bundle, manifest = good
    image = tmp_path_factory.mktemp("img") / "x.png"
    cv2.imwrite(str(image), np.full((20, 30, 3), 90, np.uint8))
    path = data.draw(st.sampled_from([p for p in _paths(manifest) if p]))
    m = json.loads(json.dumps(manifest))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = data.draw(json_values)
    (bundle / "manifest.json").write_text(json.dumps(m))
    try:
        for args in (["run", str(bundle), "--source", str(image)], ["install", str(bundle), "--into", str(tmp_path_factory.mktemp("dev"))]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code in (0, 2), (args, result.output, result.exception)
            assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
            if result.exit_code == 2:
                assert "error:" in result.output
    finally:
        (bundle / "manifest.json").write_text(json.dumps(manifest))
