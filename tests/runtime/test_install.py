"""Atomic bundle install/rollback on a device directory; corrupt bundles are refused."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgefg.errors import BundleError, ChecksumError
from edgefg.manifest import load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.install import install_bundle, rollback
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


# -- no signed downgrade, one install at a time, signals -------------------------------------------
def set_release(bundle_dir, release):
    """Give a bundle another release number (manifest.json is not in its checksummed file list; a
    signature made afterwards covers the new number)."""
    path = bundle_dir / "manifest.json"
    d = json.loads(path.read_text())
    d["release"] = release
    path.write_text(json.dumps(d, indent=2))


def test_deploy_stamps_its_own_time_and_release(tiny_bundles):
    m = load_manifest(tiny_bundles["int8-intel-cpu"])
    assert isinstance(m.release, int) and abs(m.release - time.time()) < 6 * 3600  # made by this test session
    assert m.release_order() == m.release


def test_a_signed_older_bundle_is_refused_unless_allowed(two_bundles, tmp_path):
    from edgefg.trust.bundle_signing import sign_bundle
    from edgefg.trust.signing import generate_keypair

    a, b = two_bundles
    set_release(a, 200)
    set_release(b, 100)
    priv, pub = generate_keypair(tmp_path / "keys")
    for x in (a, b):
        sign_bundle(x, priv)
    dev = tmp_path / "device"
    new = install_bundle(a, dev, trust=[pub]).release
    with pytest.raises(BundleError, match="refusing a downgrade.*release 100.*release 200"):
        install_bundle(b, dev, trust=[pub])  # correctly signed, but older
    assert (dev / "current").resolve() == new.resolve() and not (dev / "previous").exists()
    assert sorted(p.name for p in (dev / "releases").iterdir()) == [new.name]  # nothing copied
    cli = subprocess.run([*EDGEFG, "install", str(b), "--into", str(dev), "--trust", str(pub)], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.startswith("error: refusing a downgrade") and "--allow-downgrade" in cli.stderr
    assert "Traceback" not in cli.stderr
    ok = subprocess.run([*EDGEFG, "install", str(b), "--into", str(dev), "--trust", str(pub), "--allow-downgrade"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_manifest(dev / "current").release == 100
    rollback(dev)  # the operator's step back is not a downgrade check
    assert load_manifest(dev / "current").release == 200


def test_a_bundle_without_a_release_number_is_ordered_by_its_creation_time(two_bundles, tmp_path):
    a, b = two_bundles
    for x, created in ((a, "2026-06-01T00:00:00Z"), (b, "2025-01-01T00:00:00Z")):
        d = json.loads((x / "manifest.json").read_text())
        d.pop("release", None)
        d["created"] = created
        (x / "manifest.json").write_text(json.dumps(d))
    dev = tmp_path / "device"
    install_bundle(a, dev)
    with pytest.raises(BundleError, match="created 2025-01-01T00:00:00Z, no release number"):
        install_bundle(b, dev)


def test_a_held_lock_makes_the_second_install_wait_then_say_so(two_bundles, tmp_path):
    from edgefg.runtime.install import install_lock

    a, _ = two_bundles
    dev = tmp_path / "device"
    with install_lock(dev):
        t0 = time.monotonic()
        with pytest.raises(BundleError, match="another edgefg install or rollback"):
            install_bundle(a, dev, lock_wait_s=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
    assert not (dev / "current").exists()
    assert install_bundle(a, dev).previous is None  # the lock is free again


def test_concurrent_installs_both_land_in_order(two_bundles, tmp_path):
    a, b = two_bundles
    set_release(a, 100)
    set_release(b, 100)  # equal: neither is a downgrade of the other
    dev = tmp_path / "device"
    procs = [subprocess.Popen([*EDGEFG, "install", str(x), "--into", str(dev)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for x in (a, b)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    releases = sorted(p.name for p in (dev / "releases").iterdir())
    assert len(releases) == 2  # neither copy lost
    cur, prev = (dev / "current").resolve().name, (dev / "previous").resolve().name
    assert {cur, prev} == set(releases)  # the rollback chain holds both


SLOW_INSTALL = """
import sys, time
from pathlib import Path
import edgefg.runtime.install as inst
real = inst.copy_listed
def slow(bundle, manifest, dest):
    real(bundle, manifest, dest)
    Path(sys.argv[3]).write_text("copied")
    time.sleep(60)
inst.copy_listed = slow
try:
    inst.install_bundle(sys.argv[1], sys.argv[2])
except KeyboardInterrupt as exc:
    print(type(exc).__name__, exc)
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_mid_copy_leaves_no_partial_release(two_bundles, tmp_path, sig):
    a, b = two_bundles
    dev = tmp_path / "device"
    first = install_bundle(a, dev).release
    marker = tmp_path / "copied"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INSTALL, str(b), str(dev), str(marker)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    assert any(p.name.startswith(".") for p in (dev / "releases").iterdir())  # the temporary copy is there now
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "InstallInterrupted" in out, (out, err)
    assert [p.name for p in (dev / "releases").iterdir()] == [first.name]  # removed, not left for the next install
    assert (dev / "current").resolve() == first.resolve()


def test_a_key_id_with_terminal_escapes_is_printed_escaped(two_bundles, tmp_path):
    from edgefg.trust.signing import SIG_NAME, generate_keypair

    a, _ = two_bundles
    _, pub = generate_keypair(tmp_path / "keys")
    evil = "\x1b[2K\r\x1b[32mVERIFIED OK\x1b[0m \u202e"
    (a / SIG_NAME).write_text(json.dumps({"format": "edgefg-signature-v1", "signatures": [{"algorithm": "ed25519", "key_id": evil, "signature": "AAAA", "signed": "x"}]}))
    r = subprocess.run([*EDGEFG, "install", str(a), "--into", str(tmp_path / "dev"), "--trust", str(pub)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ")
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "\u202e" not in r.stderr
    assert "\\x1b[2K\\x0d\\x1b[32mVERIFIED OK" in r.stderr and "\\u202e" in r.stderr
