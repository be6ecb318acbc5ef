"""``edgefg keygen`` / ``sign`` / ``verify`` (registered lazily by edgefg.cli; cryptography imported when run)."""
from __future__ import annotations

from pathlib import Path

import click

from edgefg.cli_support import handle_errors
from edgefg.trust.cli_options import trust_option


@click.command("keygen")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Directory for NAME.key and NAME.pub.")
@click.option("--name", default="edgefg", show_default=True, help="File name stem of the key pair.")
@click.option("--force", is_flag=True, help="Overwrite an existing key pair.")
@handle_errors
def keygen_cmd(out: Path, name: str, force: bool) -> None:
    """Make an Ed25519 key pair for signing bundles (private key mode 0600; encrypted with
    $EDGEFG_KEY_PASSPHRASE when set). Keep NAME.key on the build machine; ship NAME.pub to devices."""
    from edgefg.trust.signing import generate_keypair, load_public_key

    private, public = generate_keypair(out, name, force=force)
    click.echo(f"private key: {private} (keep it secret, off the devices)")
    click.echo(f"public key:  {public} (key id {load_public_key(public).key_id}; pass it to --trust on devices)")


@click.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", required=True, type=click.Path(path_type=Path), help="Private key from edgefg keygen.")
@click.option("--only", is_flag=True, help="Drop the signatures of other keys (the last step of a key rotation).")
@handle_errors
def sign_cmd(bundle: Path, key: Path, only: bool) -> None:
    """Verify BUNDLE (schema, every checksum) and add this key's signature to its manifest.sig."""
    from edgefg.trust.bundle_signing import sign_bundle

    kid = sign_bundle(bundle, key, replace_all=only)
    click.echo(f"signed {bundle} with key {kid}")


@click.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@trust_option
@handle_errors
def verify_cmd(bundle: Path, trust: tuple[Path, ...]) -> None:
    """Check BUNDLE's signature against --trust keys, its schema and every checksum (exit 0 / 2)."""
    from edgefg.errors import InputPathError
    from edgefg.manifest import load_manifest
    from edgefg.trust.signing import verify_bundle

    if not trust:
        raise InputPathError("verify needs at least one --trust PUBLIC_KEY")
    key = verify_bundle(bundle, trust)
    m = load_manifest(bundle, verify=True, trust=trust)
    click.echo(f"ok: {bundle} ({m.name}, {len(m.files)} files) is signed by trusted key {key.key_id} ({key.path})")
