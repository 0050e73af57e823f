"""Signed tokens (JWT, EdDSA over Ed25519): issued by the CLI, verified by every listener.

Signing keys live in ``secrets/jwt/<kid>.key`` (0600); ``active`` names the one that signs.
Older keys stay to verify the tokens they signed until they are retired. The public halves
are published as a JWKS, so devices can verify what the box signs (see ``signing``).
Verification accepts exactly one algorithm, needs a known ``kid``, and requires ``exp``,
``iat``, ``jti``, ``sub``, ``aud`` and ``iss``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.security.files import secret_dir, write_secret

ALGORITHM = "EdDSA"
SCOPES = ("chat", "metrics", "admin", "enroll")
SAFE_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
RELOAD_MIN_INTERVAL_S = 1.0


class AuthError(Exception):
    """A refused credential. ``reason`` is a short stable label (logs, metrics); the message is
    what the caller is told. ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class KeyringError(Exception):
    """A missing or unusable key, phrased for the operator."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of the OKP key, shortened: stable, and derived from the key."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64(_raw_public(key))},
                           separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())[:16]


class SigningKeys:
    """The box's Ed25519 keyring in ``root``; safe to read while another process rotates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._active = ""
        self._loaded_at = 0.0
        self._stamp: tuple[int, ...] = ()

    @property
    def active_file(self) -> Path:
        return self.root / "active"

    def exists(self) -> bool:
        return self.active_file.exists()

    def create(self) -> str:
        """A new key, made the active one. Returns its kid."""
        secret_dir(self.root)
        key = Ed25519PrivateKey.generate()
        kid = key_id(key.public_key())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_secret(self.root / f"{kid}.key", pem)
        write_secret(self.active_file, kid.encode())
        self.reload()
        return kid

    def ensure(self) -> str:
        return self.active_kid() if self.exists() else self.create()

    def retire(self, kid: str) -> None:
        if kid == self.active_kid():
            raise KeyringError(f"{kid} is the active signing key; rotate first")
        path = self.root / f"{kid}.key"
        if not path.exists():
            raise KeyringError(f"no signing key {kid!r} in {self.root}")
        path.unlink()
        self.reload()

    def _files_stamp(self) -> tuple[int, ...]:
        try:
            return (self.active_file.stat().st_mtime_ns,
                    *(p.stat().st_mtime_ns for p in sorted(self.root.glob("*.key"))))
        except FileNotFoundError:
            return ()

    def reload(self) -> None:
        if not self.exists():
            raise KeyringError(f"no signing keys in {self.root}: run 'appliance keys init'")
        keys: dict[str, Ed25519PrivateKey] = {}
        for path in sorted(self.root.glob("*.key")):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, Ed25519PrivateKey):
                keys[path.stem] = key
        self._private = keys
        self._active = self.active_file.read_text().strip()
        self._stamp = self._files_stamp()
        self._loaded_at = time.monotonic()
        if self._active not in keys:
            raise KeyringError(f"active signing key {self._active!r} has no file in {self.root}")

    def refresh(self) -> None:
        """Pick up a rotation done by another process; at most once a second."""
        now = time.monotonic()
        if now - self._loaded_at < RELOAD_MIN_INTERVAL_S:
            return
        self._loaded_at = now
        if self._files_stamp() != self._stamp:
            self.reload()

    def _ensure_loaded(self) -> None:
        if not self._private:
            self.reload()

    def active_kid(self) -> str:
        self._ensure_loaded()
        return self._active

    def private(self, kid: str | None = None) -> tuple[str, Ed25519PrivateKey]:
        """The signing key (the active one unless ``kid``), following rotations made by
        another process within a second."""
        self._ensure_loaded()
        self.refresh()
        kid = kid or self._active
        return kid, self._private[kid]

    def public(self, kid: str) -> Ed25519PublicKey | None:
        """The verifying key for ``kid``; a key retired or added by another process counts
        within a second (the directory is looked at, at most once a second)."""
        self._ensure_loaded()
        self.refresh()
        key = self._private.get(kid)
        return key.public_key() if key is not None else None

    def kids(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._private)

    def jwks(self) -> dict[str, Any]:
        self._ensure_loaded()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig",
                          "kid": kid, "x": _b64(_raw_public(key.public_key()))}
                         for kid, key in sorted(self._private.items())]}


@dataclass(frozen=True)
class Claims:
    sub: str
    scopes: frozenset[str]
    jti: str
    exp: float
    once: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return scopes


def issue(keys: SigningKeys, *, sub: str, scopes: list[str], ttl_s: int, issuer: str,
          audience: str, once: bool = False, now: float | None = None) -> tuple[str, Claims]:
    if not SAFE_SUBJECT.match(sub):
        raise ValueError(f"subject {sub!r}: use 1-128 of A-Z a-z 0-9 . _ : - (it becomes the "
                         "MQTT client id)")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    check_scopes(scopes)
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": sub,
                               "scope": " ".join(scopes), "iat": issued, "nbf": issued,
                               "exp": issued + ttl_s, "jti": uuid.uuid4().hex}
    if once:
        payload["once"] = True
    kid, private = keys.private()
    token = jwt.encode(payload, private, algorithm=ALGORITHM, headers={"kid": kid})
    return token, _claims(payload)


def _claims(payload: dict[str, Any]) -> Claims:
    return Claims(sub=payload["sub"], scopes=frozenset(str(payload.get("scope", "")).split()),
                  jti=payload["jti"], exp=float(payload["exp"]),
                  once=payload.get("once") is True, raw=payload)


class TokenVerifier:
    def __init__(self, keys: SigningKeys, *, issuer: str, audience: str, leeway_s: int,
                 max_bytes: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_bytes = max_bytes

    def verify(self, token: str) -> Claims:
        if not token:
            raise AuthError("missing", "no token: send 'Authorization: Bearer <token>'")
        if len(token) > self.max_bytes:
            raise AuthError("oversized", f"token longer than {self.max_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("malformed", "token is not a JWT") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise AuthError("algorithm", f"token algorithm {alg!r} is not accepted; "
                            f"only {ALGORITHM}")
        kid = header.get("kid")
        key = self.keys.public(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthError("unknown_key", "token signed by a key this box does not know")
        try:
            payload = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("audience", f"token is not for this audience ({self.audience})"
                            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError("issuer", "token was not issued by this box") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "token is not valid yet (iat/nbf in the future)"
                            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("claims", f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("signature", "token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed", f"token refused: {exc}") from None
        if not isinstance(payload.get("sub"), str) or not SAFE_SUBJECT.match(payload["sub"]):
            raise AuthError("claims", "token subject is not a valid identity")
        return _claims(payload)
