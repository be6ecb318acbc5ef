"""Bundle trust and hostile input.

* :mod:`~edgefg.trust.schema` — the strict ``manifest.json`` schema (JSON Schema, checked before any
  field is used; every violation is one line naming the field).
* :mod:`~edgefg.trust.paths` — file names confined to the bundle: relative, no ``..``, no symlinks.
* :mod:`~edgefg.trust.signing` — Ed25519 keys, ``manifest.sig``, verification against ``--trust`` keys
  (``cryptography`` is imported only when signing or verifying).
* :mod:`~edgefg.trust.secrets` — credentials read from ``env:VAR`` / ``file:PATH`` and masked in every output.
* :mod:`~edgefg.trust.outputs` — stale temporary folders swept, ordinary permissions on outputs.

Only the standard library at import time (plus ``jsonschema`` when a manifest is checked).
"""
