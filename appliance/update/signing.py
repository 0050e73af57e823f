"""Ed25519 signatures over the manifest, and the keyring of keys a box trusts.

The builder holds the private key; the image ships only public keys (``*.pub``, PEM) in
``update.keyring_dir``. A key is named by its id, the first 16 hex digits of the sha256 of
the raw public key, so a signature says which key made it and a box without that key refuses
the bundle instead of guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.security.files import write_public, write_secret
from appliance.update.errors import UpdateRefused
from appliance.update.manifest import canonical_json

ALGORITHM = "ed25519"
Keyring = dict[str, Ed25519PublicKey]


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(directory: Path, name: str = "appliance-update") -> tuple[Path, Path]:
    """``<name>.key`` (PKCS#8 PEM, 0600, for the builder) and ``<name>.pub`` (for the image's
    keyring). Refuses to replace an existing key: a lost signing key strands the fleet."""
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise UpdateRefused(f"{path} exists; move it away first (keys are not replaced)")
    key = Ed25519PrivateKey.generate()
    write_secret(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    write_public(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UpdateRefused(f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateRefused(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UpdateRefused(f"{path}: not a readable PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateRefused(f"{path}: not an Ed25519 key")
    return key


def load_keyring(directory: Path) -> Keyring:
    """Every ``*.pub`` in the directory, by key id. An empty keyring trusts nothing."""
    if not directory.is_dir():
        raise UpdateRefused(f"no keyring at {directory}: this box trusts no update key")
    keys = [load_public_key(path) for path in sorted(directory.glob("*.pub"))]
    if not keys:
        raise UpdateRefused(f"keyring {directory} holds no *.pub key")
    return {key_id(key): key for key in keys}


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` document for ``data``."""
    return canonical_json({"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
                           "signature": base64.b64encode(key.sign(data)).decode()})


def verify(data: bytes, signature_doc: bytes, keyring: Keyring) -> str:
    """The id of the trusted key that signed ``data``, or UpdateRefused."""
    try:
        doc = json.loads(signature_doc)
        algorithm, kid, text = doc["algorithm"], doc["key_id"], doc["signature"]
        if not all(isinstance(item, str) for item in (algorithm, kid, text)):
            raise TypeError("fields must be strings")
        signature = base64.b64decode(text, validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
        raise UpdateRefused("manifest.sig is not a signature document") from None
    if algorithm != ALGORITHM:
        raise UpdateRefused(f"signature algorithm {algorithm!r} is not accepted "
                            f"(only {ALGORITHM})")
    if kid not in keyring:
        raise UpdateRefused(f"bundle signed by key {kid}, which is not in this box's keyring "
                            f"(trusted: {', '.join(sorted(keyring))})")
    try:
        keyring[kid].verify(signature, data)
    except InvalidSignature:
        raise UpdateRefused(f"bad signature: the manifest was not signed by key {kid} "
                            "(altered or damaged bundle)") from None
    return str(kid)
