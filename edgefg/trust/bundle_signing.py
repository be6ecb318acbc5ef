"""``edgefg sign``: add a key's signature to a bundle that verifies (schema and every checksum).

Apart from :mod:`edgefg.trust.signing` (keys and verification, which :func:`edgefg.manifest.load_manifest`
calls with ``--trust``) because signing loads the manifest first: one module each way, no import circle."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from edgefg.manifest import MANIFEST_NAME, load_manifest
from edgefg.outputs import write_text
from edgefg.trust.signing import MAX_SIG_BYTES, SIG_FORMAT, SIG_NAME, SignatureError, key_id, load_private_key, parse_signatures, raw_public_bytes, read_bundle_file, signed_message


def sign_bundle(bundle: str | Path, private_key: str | Path | Any, replace_all: bool = False) -> str:
    """Verify ``bundle`` (schema + every checksum), then add (or refresh) this key's signature.

    ``replace_all`` drops the signatures of other keys (the last step of a key rotation). Returns the key id.
    """
    bundle = Path(bundle)
    key = private_key if not isinstance(private_key, (str, Path)) else load_private_key(private_key)
    load_manifest(bundle, verify=True)  # never sign a bundle that does not verify
    manifest = read_bundle_file(bundle, MANIFEST_NAME, 1 << 30)
    assert manifest is not None
    kid = key_id(raw_public_bytes(key.public_key()))
    sigs: list[dict[str, str]] = []
    existing = read_bundle_file(bundle, SIG_NAME, MAX_SIG_BYTES)
    if existing is not None and not replace_all:
        try:
            sigs = [s for s in parse_signatures(existing, str(bundle / SIG_NAME)) if s["key_id"] != kid]
        except SignatureError:
            sigs = []  # an unreadable old file is replaced
    sigs.append({"algorithm": "ed25519", "key_id": kid, "signature": base64.b64encode(key.sign(signed_message(manifest))).decode(),
                 "signed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    write_text(bundle / SIG_NAME, json.dumps({"format": SIG_FORMAT, "signatures": sigs}, indent=2) + "\n")
    return kid
