"""Who the gate's users are on a box with tokens.

HTTP and WebSocket users send the first token as their bearer. The box accepts an MQTT client
only when its client id equals its token's subject, and one client id cannot be connected
twice, so each MQTT user takes a token of its own (one per line in ``--token-file``) and uses
its subject as client id. Standard library and PyJWT only: the gate imports this too.
"""

from __future__ import annotations

import jwt


class TokenError(ValueError):
    """A token that cannot be used as an identity."""


def read_tokens(text: str) -> list[str]:
    """Tokens one per line; blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def subject(token: str) -> str:
    """The token's ``sub``, read without verifying it (the box verifies)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a JWT ({exc})") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("the token has no subject (sub)")
    return sub


def mqtt_identities(tokens: list[str]) -> list[tuple[str, str]]:
    """(client id, password) for each distinct subject, in the order given."""
    seen: dict[str, str] = {}
    for token in tokens:
        seen.setdefault(subject(token), token)
    return list(seen.items())
