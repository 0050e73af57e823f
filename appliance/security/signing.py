"""Signed HTTP messages in both directions.

Inbound (an IM platform or bridge calling the box): HMAC-SHA256 with the integration's shared
secret over ``{timestamp}.{nonce}.{body}``, in ``X-Appliance-Timestamp``, ``-Nonce`` and
``-Signature: sha256=<hex>``. Refused outside ``security.webhook_window_s`` of the box's clock,
or when the nonce was seen before (the replay guard keeps it for the window).

Outbound (the box answering or calling back): the same three headers, the signature being
``ed25519;kid=<kid>;sig=<base64url>`` by the box's active signing key over the same string,
so a client verifies the box with the public keys from ``/.well-known/jwks.json``. Reply and
error events on MQTT and WebSocket carry the same signature in a ``sig`` field, over the
event's canonical JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.security.replay import ReplayGuard
from appliance.security.tokens import AuthError, SigningKeys

TIMESTAMP = "X-Appliance-Timestamp"
NONCE = "X-Appliance-Nonce"
SIGNATURE = "X-Appliance-Signature"
MAX_NONCE_CHARS = 128
TIMESTAMP_FORMAT = re.compile(r"[0-9]{1,12}")
NONCE_FORMAT = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NONCE_CHARS}}}")


def signed_string(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}.{nonce}.".encode() + body


def hmac_headers(secret: bytes, body: bytes, now: float | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """What a webhook caller sends (used by clients and tests)."""
    timestamp = str(int(now if now is not None else time.time()))
    nonce = nonce or secrets.token_urlsafe(16)
    digest = hmac.new(secret, signed_string(timestamp, nonce, body), hashlib.sha256).hexdigest()
    return {TIMESTAMP: timestamp, NONCE: nonce, SIGNATURE: f"sha256={digest}"}


def verify_hmac(secret: bytes, headers: Mapping[str, str], body: bytes, window_s: int,
                guard: ReplayGuard, scope: str) -> None:
    """Raise AuthError unless ``body`` is freshly signed with ``secret`` and not a replay."""
    timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
    signature = headers.get(SIGNATURE, "")
    if not (timestamp and nonce and signature):
        raise AuthError("unsigned", f"send {TIMESTAMP}, {NONCE} and {SIGNATURE}")
    if not TIMESTAMP_FORMAT.fullmatch(timestamp) or not NONCE_FORMAT.fullmatch(nonce) \
            or not signature.isascii():
        raise AuthError("malformed", "timestamp must be Unix seconds, the nonce 1 to "
                        f"{MAX_NONCE_CHARS} of A-Z a-z 0-9 _ - and the signature ASCII")
    skew = abs(time.time() - int(timestamp))
    if skew > window_s:
        raise AuthError("stale", f"timestamp is {skew:.0f} s away from the box's clock; the "
                        f"window is {window_s} s")
    expected = "sha256=" + hmac.new(secret, signed_string(timestamp, nonce, body),
                                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise AuthError("signature", "signature does not verify")
    # Only a correctly signed request may spend a nonce (no one can burn others' nonces).
    if not guard.first_use("nonce", f"{scope}:{nonce}", time.time() + 2 * window_s):
        raise AuthError("replayed", "this nonce was used already")


def box_headers(keys: SigningKeys, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers by which the box signs what it sends."""
    timestamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_urlsafe(16)
    kid, key = keys.private()
    signature = key.sign(signed_string(timestamp, nonce, body))
    encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return {TIMESTAMP: timestamp, NONCE: nonce, SIGNATURE: f"ed25519;kid={kid};sig={encoded}"}


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes an event's signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_event(keys: SigningKeys, event: dict[str, Any], recipient: str,
               now: float | None = None) -> dict[str, Any]:
    """A reply or error event for MQTT/WebSocket, addressed (``to``) and dated (``ts``), with
    ``sig`` over its canonical form without ``sig``: a device can tell the box's answers from
    injected ones, and one addressed to another device or replayed much later."""
    dated = {**event, "to": recipient, "ts": int(now if now is not None else time.time())}
    kid, key = keys.private()
    signature = base64.urlsafe_b64encode(key.sign(canonical(dated))).rstrip(b"=").decode()
    return {**dated, "sig": f"ed25519;kid={kid};sig={signature}"}


def verify_event(jwks: dict[str, Any], event: Mapping[str, Any]) -> str:
    """Check an event's ``sig`` against the box's JWKS; returns the kid. For clients."""
    unsigned = {k: v for k, v in event.items() if k != "sig"}
    fields = dict(part.split("=", 1) for part in event["sig"].split(";")[1:])
    _public(jwks, fields["kid"]).verify(_unb64(fields["sig"]), canonical(unsigned))
    return fields["kid"]


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(jwks: dict[str, Any], kid: str) -> Ed25519PublicKey:
    key = next((k for k in jwks["keys"] if k["kid"] == kid), None)
    if key is None:
        raise InvalidSignature(f"no key {kid} in the box's JWKS")
    return Ed25519PublicKey.from_public_bytes(_unb64(key["x"]))


def verify_box(jwks: dict[str, Any], headers: Mapping[str, str], body: bytes) -> str:
    """Check a box signature against its published JWKS; returns the kid. For clients."""
    fields = dict(part.split("=", 1) for part in headers[SIGNATURE].split(";")[1:])
    _public(jwks, fields["kid"]).verify(
        _unb64(fields["sig"]), signed_string(headers[TIMESTAMP], headers[NONCE], body))
    return fields["kid"]


async def post_signed(client: Any, url: str, keys: SigningKeys, body: bytes) -> Any:
    """POST JSON ``body`` signed with the box's headers (an ``httpx.AsyncClient``'s answer):
    the webhook callbacks and the handoffs to staff go out the same way."""
    return await client.post(url, content=body, headers={"Content-Type": "application/json",
                                                         **box_headers(keys, body)})
