"""Atomic bundle install/rollback on a device directory; corrupt bundles are refused."""
import os
import shutil
import subprocess

import pytest

from edgefg.errors import BundleError, ChecksumError
from edgefg.manifest import load_manifest
from edgefg.runtime.install import install_bundle, rollback
from edgefg.runtime.model import LoadedBundle
from tests.conftest import EDGEFG



def flip_byte(bundle_dir):
    m = load_manifest(bundle_dir, verify=False)
    path = bundle_dir / m.model_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture()
def two_bundles(tiny_bundles, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_bundles["fp32-intel-cpu"], a)
    shutil.copytree(tiny_bundles["int8-intel-cpu"], b)
    return a, b


def test_install_switch_rollback(two_bundles, tmp_path):
    a, b = two_bundles
    dev = tmp_path / "device"
    r1 = install_bundle(a, dev)
    assert r1.previous is None and (dev / "current").resolve() == r1.release.resolve()
    assert not os.path.isabs(os.readlink(dev / "current"))  # relative: DIR can move
    r2 = install_bundle(b, dev)
    assert (dev / "current").resolve() == r2.release.resolve() and (dev / "previous").resolve() == r1.release.resolve()
    assert load_manifest(dev / "current").precision == "int8"
    assert install_bundle(b, dev).unchanged
    rollback(dev)
    assert (dev / "current").resolve() == r1.release.resolve() and (dev / "previous").resolve() == r2.release.resolve()
    with LoadedBundle(dev / "current") as model:
        assert model.manifest.precision == "fp32"
    rollback(dev)  # and forward again
    assert (dev / "current").resolve() == r2.release.resolve()


def test_corrupt_bundle_is_refused_and_current_stays(two_bundles, tmp_path):
    a, b = two_bundles
    dev = tmp_path / "device"
    good = install_bundle(a, dev).release
    flip_byte(b)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        install_bundle(b, dev)
    assert (dev / "current").resolve() == good.resolve()
    assert [p.name for p in (dev / "releases").iterdir()] == [good.name]  # nothing half-written
    with pytest.raises(ChecksumError):
        LoadedBundle(b)  # the runtime refuses it too


def test_rollback_without_previous(two_bundles, tmp_path):
    dev = tmp_path / "device"
    install_bundle(two_bundles[0], dev)
    with pytest.raises(BundleError, match="no previous"):
        rollback(dev)


def test_cli_install_rollback_and_flipped_byte(two_bundles, tmp_path):
    a, b = two_bundles
    dev = tmp_path / "device"
    ok = subprocess.run([*EDGEFG, "install", str(a), "--into", str(dev)], capture_output=True, text=True)
    assert ok.returncode == 0 and "installed" in ok.stdout, ok.stderr
    flip_byte(b)
    bad = subprocess.run([*EDGEFG, "install", str(b), "--into", str(dev)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: checksum mismatch") and "Traceback" not in bad.stderr
    run = subprocess.run([*EDGEFG, "run", str(b), "--source", "0"], capture_output=True, text=True)
    assert run.returncode == 2 and "checksum mismatch" in run.stderr
    rb = subprocess.run([*EDGEFG, "rollback", "--into", str(dev)], capture_output=True, text=True)
    assert rb.returncode == 2 and "no previous" in rb.stderr
