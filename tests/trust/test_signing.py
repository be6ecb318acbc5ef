"""Signed bundles: keygen → sign → verify/install/run/validate/bench with --trust; any changed byte,
an unsigned bundle, an untrusted key are refused (exit 2); key rotation with repeatable --trust."""
from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from edgefg.errors import BundleError, ChecksumError
from edgefg.manifest import load_manifest
from edgefg.runtime.install import install_bundle
from edgefg.trust.bundle_signing import sign_bundle
from edgefg.trust.signing import SIG_NAME, SignatureError, verify_bundle
from tests.trust.conftest import edgefg, one_line_error, write_onnx


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    pytest.importorskip("cryptography")
    ok = edgefg("keygen", "-o", tmp_path / "k")
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "edgefg.key").st_mode) == 0o600
    assert "key id" in ok.stdout
    again = edgefg("keygen", "-o", tmp_path / "k")
    one_line_error(again)  # never overwrites a key without --force


def test_signed_round_trip_and_one_byte_manifest_change(bundle, keys, photos, tmp_path):
    old_key, old_pub = keys["old"]
    signed = edgefg("sign", bundle, "--key", old_key)
    assert signed.returncode == 0, signed.stderr
    ok = edgefg("verify", bundle, "--trust", old_pub)
    assert ok.returncode == 0 and "ok:" in ok.stdout, ok.stderr
    run = edgefg("run", bundle, "--source", photos, "--trust", old_pub)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 3
    # one byte of manifest.json changed (a label renamed 'a' -> 'c'): refused everywhere, exit 2
    path = bundle / "manifest.json"
    text = path.read_text()
    assert '"a"' in text
    path.write_text(text.replace('"a"', '"c"', 1))
    for cmd in (["verify", bundle], ["run", bundle, "--source", photos], ["install", bundle, "--into", tmp_path / "dev"],
                ["validate", bundle, "--data", photos], ["bench", bundle, "--rounds", "1", "--iters", "1"]):
        line = one_line_error(edgefg(*cmd, "--trust", old_pub))
        assert "does not match" in line, (cmd, line)
    assert not (tmp_path / "dev" / "current").exists()
    # without --trust the (self-consistent) change is not detectable: exactly why --trust exists
    assert edgefg("run", bundle, "--source", photos).returncode == 0


def test_any_changed_file_byte_is_refused_even_when_the_manifest_is_resigned_by_an_attacker(bundle, keys, tmp_path):
    old_key, old_pub = keys["old"]
    sign_bundle(bundle, old_key)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-5] ^= 1
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_manifest(bundle, trust=[old_pub])
    # the attacker fixes the checksum in the manifest: the signature no longer matches
    m = json.loads((bundle / "manifest.json").read_text())
    from edgefg.manifest import sha256_file

    m["files"]["model.onnx"] = sha256_file(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))
    with pytest.raises(SignatureError, match="does not match"):
        load_manifest(bundle, trust=[old_pub])
    # and signing it with their own key does not help: not a trusted key
    attacker = tmp_path / "attacker"
    from edgefg.trust.signing import generate_keypair

    akey, _ = generate_keypair(attacker)
    sign_bundle(bundle, akey, replace_all=True)
    with pytest.raises(SignatureError, match="no trusted key"):
        verify_bundle(bundle, [old_pub])


def test_unsigned_bundle_is_refused_under_trust(bundle, keys, photos):
    _, pub = keys["old"]
    line = one_line_error(edgefg("run", bundle, "--source", photos, "--trust", pub))
    assert "not signed" in line
    (bundle / SIG_NAME).write_text("{not json")
    assert "not valid JSON" in one_line_error(edgefg("verify", bundle, "--trust", pub))


def test_trust_takes_a_public_key_only(bundle, keys):
    key, _ = keys["old"]
    assert "private key" in one_line_error(edgefg("verify", bundle, "--trust", key))
    assert "does not exist" in one_line_error(edgefg("verify", bundle, "--trust", bundle / "nope.pub"))


def test_key_rotation(bundle, keys, tmp_path):
    (old_key, old_pub), (new_key, new_pub) = keys["old"], keys["new"]
    sign_bundle(bundle, old_key)
    # phase 1: devices trust old + new; bundles are signed with both
    sign_bundle(bundle, new_key)
    assert len(json.loads((bundle / SIG_NAME).read_text())["signatures"]) == 2
    for trusted in ([old_pub], [new_pub], [old_pub, new_pub]):
        verify_bundle(bundle, trusted)
    # phase 2: old key retired: bundles carry only the new signature
    only = edgefg("sign", bundle, "--key", new_key, "--only")
    assert only.returncode == 0, only.stderr
    assert verify_bundle(bundle, [old_pub, new_pub]).path == str(new_pub)
    with pytest.raises(SignatureError, match="no trusted key"):
        verify_bundle(bundle, [old_pub])  # a device that never learned the new key refuses it
    dev = tmp_path / "dev"
    r = install_bundle(bundle, dev, trust=[str(old_pub), str(new_pub)])
    assert (r.release / SIG_NAME).is_file()  # the installed release verifies on its own
    load_manifest(dev / "current", trust=[str(new_pub)])
    rot = edgefg("install", bundle, "--into", tmp_path / "dev2", "--trust", old_pub, "--trust", new_pub)
    assert rot.returncode == 0, rot.stderr


def test_sign_refuses_a_corrupt_bundle(bundle, keys):
    (bundle / "labels.txt").write_text("x\n")
    with pytest.raises(ChecksumError):
        sign_bundle(bundle, keys["old"][0])
    assert not (bundle / SIG_NAME).exists()


def test_deploy_sign_wraps_and_signs(tmp_path, keys):
    pytest.importorskip("onnxruntime")
    key, pub = keys["new"]
    model = write_onnx(tmp_path / "m" / "model.onnx")
    (tmp_path / "m" / "labels.txt").write_text("a\nb\n")
    out = tmp_path / "signed"
    dep = edgefg("deploy", model, "--target", "onnxruntime-cpu", "-o", out, "--input-size", "16", "16", "--mean", "0.5", "0.5", "0.5",
                 "--std", "0.25", "0.25", "0.25", "--sign", key)
    assert dep.returncode == 0, dep.stderr
    assert edgefg("verify", out, "--trust", pub).returncode == 0
    bad = edgefg("deploy", model, "--target", "onnxruntime-cpu", "-o", tmp_path / "x", "--sign", tmp_path / "missing.key")
    one_line_error(bad)
    assert not (tmp_path / "x").exists()  # checked before any work


def test_signature_file_symlink_is_refused(bundle, keys, tmp_path):
    key, pub = keys["old"]
    sign_bundle(bundle, key)
    shutil.move(bundle / SIG_NAME, tmp_path / "elsewhere.sig")
    os.symlink(tmp_path / "elsewhere.sig", bundle / SIG_NAME)
    with pytest.raises(BundleError, match="symlink"):
        verify_bundle(bundle, [pub])


BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cryptography", "torch", "onnx", "timm", "nncf"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
from edgefg.cli import main
sys.argv = ["edgefg"] + sys.argv[1:]
main()
"""


def test_cryptography_is_needed_only_with_trust(bundle, keys, photos):
    import subprocess
    import sys

    def blocked(*args):
        return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], capture_output=True, text=True, timeout=120)

    plain = blocked("run", bundle, "--source", photos)
    assert plain.returncode == 0, plain.stderr
    line = one_line_error(blocked("run", bundle, "--source", photos, "--trust", keys["old"][1]))
    assert "cryptography" in line
    sign_bundle(bundle, keys["old"][0])
    with_trust = edgefg("run", bundle, "--source", photos, "--trust", keys["old"][1])  # not blocked: works
    assert with_trust.returncode == 0, with_trust.stderr
