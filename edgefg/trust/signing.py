"""Ed25519-signed bundles: the keygen, sign and verify commands, and ``--trust PUBLIC`` on install/run/validate/bench.

The signature covers the exact bytes of ``manifest.json`` (behind a domain-separation prefix), and the
manifest lists every file of the bundle with its sha256 — so a change to any byte of any listed file,
or of the manifest itself, is refused. Signatures live in ``manifest.sig`` beside the manifest (it
cannot be listed in the manifest it signs)::

    {"format": "edgefg-signature-v1",
     "signatures": [{"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>", "signed": "..."}]}

A bundle may carry several signatures (``sign`` adds one per key), and ``--trust`` may be given several
times: a bundle is accepted when one of its signatures verifies under one of the trusted keys. Key
rotation is therefore: devices trust OLD and NEW → bundles are signed with NEW (and OLD while old
devices remain) → devices drop OLD. ``cryptography`` is imported only here, when keys are used.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefg.errors import BundleError, InputPathError, MissingDependencyError, OutputExistsError

SIG_NAME = "manifest.sig"
SIG_FORMAT = "edgefg-signature-v1"
DOMAIN = b"edgefg-manifest-v1\x00"  # a signature over a manifest can never be replayed as another message
MAX_SIG_BYTES = 64 << 10
MAX_KEY_BYTES = 16 << 10
PASSPHRASE_ENV = "EDGEFG_KEY_PASSPHRASE"


class SignatureError(BundleError):
    """A bundle that is unsigned, signed by no trusted key, or whose signature does not match."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # missing, or a broken install
        raise MissingDependencyError(
            "signed bundles (--trust, sign, keygen) need the optional dependency 'cryptography'",
            "install it with: pip install 'edgefg[trust]' (the runtime-* extras include it)",
        ) from None
    return serialization, ed25519


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    key: Any  # cryptography Ed25519PublicKey
    path: str = ""


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def raw_public_bytes(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_small(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputPathError(f"{what} '{path}' does not exist or is not a file")
    if path.stat().st_size > MAX_KEY_BYTES:
        raise InputPathError(f"{what} '{path}' is too large to be a key file")
    return path.read_bytes()


# -- keys --------------------------------------------------------------------------------------
def generate_keypair(out_dir: str | Path, name: str = "edgefg", force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600; encrypted when $EDGEFG_KEY_PASSPHRASE is set) and
    ``NAME.pub`` (SubjectPublicKeyInfo PEM) into ``out_dir``."""
    serialization, ed25519 = _crypto()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (private_path, public_path):
        if p.exists() and not force:
            raise OutputExistsError(f"'{p}' already exists", "choose another -o/--name, or pass --force to overwrite")
    key = ed25519.Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption = serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: str | Path) -> Any:
    serialization, ed25519 = _crypto()
    data = _read_small(Path(path), "private key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        raise InputPathError(f"private key '{path}' is encrypted", f"set {PASSPHRASE_ENV} to its passphrase") from None
    except ValueError:
        raise InputPathError(f"'{path}' is not a PEM private key (or the passphrase is wrong)", "use the .key written by edgefg keygen") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputPathError(f"'{path}' is not an Ed25519 key", "make one with: edgefg keygen -o DIR")
    return key


def load_public_key(path: str | Path) -> PublicKey:
    serialization, ed25519 = _crypto()
    data = _read_small(Path(path), "public key")
    if b"PRIVATE KEY" in data:
        raise InputPathError(f"'{path}' is a private key", "pass the public key (.pub) to --trust; keep the private key off devices")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputPathError(f"'{path}' is not a PEM public key", "use the .pub written by edgefg keygen") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputPathError(f"'{path}' is not an Ed25519 public key", "make one with: edgefg keygen -o DIR")
    return PublicKey(key_id(raw_public_bytes(key)), key, str(path))


def load_trusted(paths: Iterable[str | Path | PublicKey]) -> list[PublicKey]:
    return [p if isinstance(p, PublicKey) else load_public_key(p) for p in paths]


# -- signatures --------------------------------------------------------------------------------
def signed_message(manifest_bytes: bytes) -> bytes:
    return DOMAIN + manifest_bytes


def read_bundle_file(bundle: Path, name: str, limit: int) -> bytes | None:
    from edgefg.trust.paths import open_confined

    try:
        with open_confined(bundle, name, name) as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise SignatureError(f"'{bundle / name}' is larger than {limit} bytes")
    return data


def parse_signatures(sig_bytes: bytes, where: str) -> list[dict[str, str]]:
    try:
        doc = json.loads(sig_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SignatureError(f"'{where}' is not valid JSON", "re-sign the bundle with edgefg sign") from None
    sigs = doc.get("signatures") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT or not isinstance(sigs, list) or len(sigs) > 64:
        raise SignatureError(f"'{where}' is not an {SIG_FORMAT} file", "re-sign the bundle with edgefg sign")
    ok = [s for s in sigs if isinstance(s, dict) and s.get("algorithm") == "ed25519"
          and isinstance(s.get("key_id"), str) and isinstance(s.get("signature"), str)]
    return ok


def verify_manifest_bytes(manifest_bytes: bytes, sig_bytes: bytes | None, trusted: Sequence[PublicKey], where: str = "bundle") -> PublicKey:
    """The trusted key whose signature over ``manifest_bytes`` verifies; :class:`SignatureError` otherwise."""
    _crypto()  # a clear error when cryptography is missing
    from cryptography.exceptions import InvalidSignature

    if not trusted:
        raise SignatureError("no trusted public key given")
    if sig_bytes is None:
        raise SignatureError(f"'{where}' is not signed (no {SIG_NAME}) and --trust was given", "sign it with: edgefg sign BUNDLE --key PRIVATE")
    sigs = parse_signatures(sig_bytes, f"{where}/{SIG_NAME}")
    by_id = {k.key_id: k for k in trusted}
    mismatched = []
    for s in sigs:
        key = by_id.get(s["key_id"])
        if key is None:
            continue
        try:
            signature = base64.b64decode(s["signature"], validate=True)
            key.key.verify(signature, signed_message(manifest_bytes))
            return key
        except (InvalidSignature, binascii.Error, ValueError):
            mismatched.append(s["key_id"])
    if mismatched:
        raise SignatureError(
            f"the signature of '{where}' by key {mismatched[0]} does not match its manifest.json (changed after signing)",
            "do not install it; re-deploy and re-sign the bundle",
        )
    signed_by = ", ".join(s["key_id"] for s in sigs) or "nobody"
    raise SignatureError(
        f"'{where}' is signed by no trusted key (signed by: {signed_by}; trusted: {', '.join(by_id)})",
        "pass the signer's public key to --trust, or re-sign the bundle with a trusted key",
    )


def verify_manifest_signature(bundle: str | Path, manifest_bytes: bytes, trusted: Iterable[str | Path | PublicKey]) -> PublicKey:
    """Check the signature of ``manifest_bytes`` (as read from ``bundle``) against ``trusted`` keys."""
    sig = read_bundle_file(Path(bundle), SIG_NAME, MAX_SIG_BYTES)
    return verify_manifest_bytes(manifest_bytes, sig, load_trusted(trusted), str(bundle))


def verify_bundle(bundle: str | Path, trusted: Iterable[str | Path | PublicKey]) -> PublicKey:
    """Check ``bundle``'s signature against ``trusted`` keys (manifest bytes only; see load_manifest for all)."""
    from edgefg.manifest_fields import MANIFEST_NAME
    from edgefg.trust.schema import MAX_MANIFEST_BYTES

    bundle = Path(bundle)
    keys = load_trusted(trusted)
    manifest = read_bundle_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    if manifest is None:
        raise BundleError(f"'{bundle}' has no {MANIFEST_NAME}")
    return verify_manifest_bytes(manifest, read_bundle_file(bundle, SIG_NAME, MAX_SIG_BYTES), keys, str(bundle))
