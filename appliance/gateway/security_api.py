"""How the box proves itself, and how a device trades a one-time enrolment token for its own.

- ``GET /.well-known/jwks.json``: the public keys that sign tokens, webhook calls and replies.
- ``POST /v1/enroll``: with a one-time token carrying the ``enroll`` scope (``appliance token
  issue --sub DEVICE --scope enroll --once``), returns a ``chat`` token for the same subject.
  A second use of the enrolment token is refused as a replay.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from appliance.gateway.auth import require
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.security import tokens
from appliance.security.tokens import Claims

router = APIRouter()


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict[str, Any]:
    keys: tokens.SigningKeys = gateway_state(request).signing_keys
    keys.refresh()
    return keys.jwks()


@router.post("/v1/enroll")
async def enroll(request: Request,
                 claims: Claims | None = Depends(require("enroll"))) -> dict[str, Any]:
    if claims is None:
        raise APIError(409, "authentication is off on this box: there is nothing to enrol for",
                       code="auth_disabled")
    if not claims.once:
        raise APIError(403, "enrolment needs a one-time token (issued with --once)",
                       code="not_one_time")
    settings = gateway_state(request).settings
    token, issued = tokens.issue(gateway_state(request).signing_keys, sub=claims.sub,
                                 scopes=["chat"], ttl_s=settings.security.device_token_ttl_s,
                                 issuer=settings.security.issuer,
                                 audience=settings.security.audience)
    return {"token": token, "sub": issued.sub, "scope": "chat", "expires_at": int(issued.exp),
            "jti": issued.jti}
