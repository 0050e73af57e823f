"""Field encryption at rest: AES-256-GCM per stored value, keys in one 0600 JSON file.

A sealed value is ``0x01 | 12-byte random nonce | ciphertext and tag``. The id of the key that
sealed it is kept in the row's ``kid`` column (kid ``''`` means plaintext written before
encryption was on), and the associated data names the row and column, so a value copied to
another row or column does not open. Equality lookups (who owns a conversation, which replies
a device has not acknowledged) use a blind index: HMAC-SHA256 under a separate index key that
is never rotated, so an index stays valid across data key rotations.

The key file is rewritten atomically by whichever process rotates; the others notice through
:meth:`DataKeyring.refresh` (one ``stat``) before they seal and when they meet an unknown kid.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.security.files import SECRET_MODE, secret_dir, write_secret

VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
PLAINTEXT_KID = ""


class CipherError(Exception):
    """An unusable key file or sealed value, phrased for the operator."""


class UnknownKey(CipherError):
    """A row names a data key the key file does not hold (dropped, or the file replaced)."""


class SealBroken(CipherError):
    """A sealed value failed authentication: tampered with, or moved from its row or column."""


def aad(*parts: str) -> bytes:
    """Associated data naming where a value lives; JSON so a '|' in a topic cannot shift it."""
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str, path: Path) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise CipherError(f"{path}: {what} is not base64") from exc
    if len(key) != KEY_BYTES:
        raise CipherError(f"{path}: {what} has {len(key)} bytes; keys have {KEY_BYTES}")
    return key


def new_kid() -> str:
    return secrets.token_hex(4)


class DataKeyring:
    """The data keys and the index key, as stored in ``path`` (written only via ensure,
    rotate and drop, each under an flock so two processes never lose each other's key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.active = ""
        self.keys: dict[str, bytes] = {}
        self.index_key = b""
        self._stamp: tuple[int, int, int] | None = None

    def ensure(self) -> DataKeyring:
        """Create the key file with a first data key and the index key, unless it exists."""
        with self._locked():
            if not self.path.exists():
                kid = new_kid()
                self._write(kid, {kid: AESGCM.generate_key(bit_length=256)},
                            secrets.token_bytes(KEY_BYTES))
            self._load()
        return self

    def rotate(self) -> str:
        """Add a fresh data key and make it the active one; older keys stay for old rows."""
        with self._locked():
            self._load()
            kid = new_kid()
            while kid in self.keys:
                kid = new_kid()
            self._write(kid, {**self.keys, kid: AESGCM.generate_key(bit_length=256)},
                        self.index_key)
            self._load()
        return kid

    def drop(self, kid: str) -> None:
        """Forget a data key; only once no row is sealed with it (see rekey)."""
        with self._locked():
            self._load()
            if kid == self.active:
                raise CipherError(f"data key {kid!r} is the active one; rotate first")
            if kid in self.keys:
                self._write(self.active, {k: v for k, v in self.keys.items() if k != kid},
                            self.index_key)
            self._load()

    def refresh(self) -> bool:
        """Re-read the file if another process rewrote it (a stat when it did not)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise CipherError(f"data key file {self.path} is missing; sealed rows cannot be "
                              "read without it (restore it from backup)") from exc
        if (st.st_mtime_ns, st.st_ino, st.st_size) == self._stamp:
            return False
        self._load()
        return True

    def kids(self) -> list[str]:
        """The data key ids in the file as it is now."""
        self.refresh()
        return sorted(self.keys)

    def key(self, kid: str) -> bytes:
        if kid not in self.keys:
            self.refresh()
        if kid not in self.keys:
            raise UnknownKey(f"data key {kid!r} is not in {self.path}: it was dropped or the "
                             "file was replaced, so values sealed with it cannot be opened")
        return self.keys[kid]

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            raw = json.loads(self.path.read_text())
            active, keys, index = raw["active"], raw["keys"], raw["index"]
        except FileNotFoundError as exc:
            raise CipherError(f"data key file {self.path} is missing") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise CipherError(f"{self.path}: not a data key file ({exc})") from exc
        if not isinstance(keys, dict) or active not in keys:
            raise CipherError(f"{self.path}: active key {active!r} is not among its keys")
        self.keys = {kid: _unb64(text, f"key {kid!r}", self.path) for kid, text in keys.items()}
        self.index_key = _unb64(index, "index key", self.path)
        self.active = active
        self._stamp = (st.st_mtime_ns, st.st_ino, st.st_size)

    def _write(self, active: str, keys: dict[str, bytes], index_key: bytes) -> None:
        body = {"active": active, "keys": {k: _b64(v) for k, v in keys.items()},
                "index": _b64(index_key)}
        write_secret(self.path, json.dumps(body, indent=2).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        secret_dir(self.path.parent)
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT,
                     SECRET_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class Sealer(Protocol):
    """What the store needs: :class:`FieldCipher`, or :class:`Plaintext` when encryption is off."""

    @property
    def active_kid(self) -> str: ...

    def seal(self, value: str | None, aad: bytes, kid: str | None = None
             ) -> bytes | str | None: ...

    def seal_bytes(self, value: bytes, aad: bytes, kid: str | None = None) -> bytes: ...

    def open(self, blob: bytes | str, kid: str, aad: bytes) -> str: ...

    def open_bytes(self, blob: bytes | str, kid: str, aad: bytes) -> bytes: ...

    def blind(self, value: str | bytes) -> str | bytes: ...


class FieldCipher:
    def __init__(self, keyring: DataKeyring) -> None:
        self.keyring = keyring
        self._aead: dict[tuple[str, bytes], AESGCM] = {}

    @property
    def active_kid(self) -> str:
        """The key new values are sealed with; reads the key file again if it changed."""
        self.keyring.refresh()
        return self.keyring.active

    def seal(self, value: str | None, aad: bytes, kid: str | None = None) -> bytes | None:
        """Encrypt ``value`` under ``kid`` (default: the active key); None stays None.
        Pass the kid you record in the row, so every column of a row uses the same key."""
        if value is None:
            return None
        return self.seal_bytes(value.encode(), aad, kid)

    def seal_bytes(self, value: bytes, aad: bytes, kid: str | None = None) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._cipher(kid or self.active_kid).encrypt(nonce, value, aad)

    def open(self, blob: bytes | str, kid: str, aad: bytes) -> str:
        """The plaintext of a sealed value; kid '' means it was stored as plaintext."""
        if kid == PLAINTEXT_KID:
            return blob if isinstance(blob, str) else bytes(blob).decode()
        return self.open_bytes(blob, kid, aad).decode()

    def open_bytes(self, blob: bytes | str, kid: str, aad: bytes) -> bytes:
        if kid == PLAINTEXT_KID:
            return blob.encode() if isinstance(blob, str) else bytes(blob)
        if not isinstance(blob, bytes) or blob[:1] != VERSION:
            raise SealBroken(f"value marked as sealed with key {kid!r} is not in the sealed "
                             "format (version 1)")
        nonce, body = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            return self._cipher(kid).decrypt(nonce, body, aad)
        except InvalidTag as exc:
            raise SealBroken(f"a value sealed with key {kid!r} failed authentication: it was "
                             "altered, or moved from another row or column") from exc

    def blind(self, value: str | bytes) -> str:
        """Blind index for equality lookups: equal inputs give equal outputs, nothing more."""
        data = value.encode() if isinstance(value, str) else value
        return hmac.new(self.keyring.index_key, data, hashlib.sha256).hexdigest()

    def _cipher(self, kid: str) -> AESGCM:
        key = self.keyring.key(kid)
        cipher = self._aead.get((kid, key))
        if cipher is None:
            cipher = self._aead[(kid, key)] = AESGCM(key)
        return cipher


class Plaintext:
    """Stands in for the cipher when encryption at rest is off: values are stored as given,
    and the "blind index" is the value itself."""

    active_kid = PLAINTEXT_KID

    def seal(self, value: str | None, aad: bytes, kid: str | None = None) -> str | None:
        return value

    def seal_bytes(self, value: bytes, aad: bytes, kid: str | None = None) -> bytes:
        return value

    def open(self, blob: bytes | str, kid: str, aad: bytes) -> str:
        self._check(kid)
        return blob if isinstance(blob, str) else bytes(blob).decode()

    def open_bytes(self, blob: bytes | str, kid: str, aad: bytes) -> bytes:
        self._check(kid)
        return blob.encode() if isinstance(blob, str) else bytes(blob)

    def blind(self, value: str | bytes) -> str | bytes:
        return value

    @staticmethod
    def _check(kid: str) -> None:
        if kid != PLAINTEXT_KID:
            raise UnknownKey(f"a value is sealed with data key {kid!r}, but encryption at rest "
                             "is off (security.encrypt_at_rest = false): turn it back on to "
                             "read it")
