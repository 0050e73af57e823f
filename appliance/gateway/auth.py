"""Bearer tokens on HTTP and WebSocket routes: ``Depends(require("chat"))`` on a router.

WebSocket clients that cannot set headers (browsers) may pass ``?access_token=``. With
``security.auth`` off, the gateway state's ``access`` is None and every dependency lets the
call through.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection

from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.security.tokens import AuthError, Claims

CHALLENGE = 'Bearer realm="appliance"'


def peer(conn: HTTPConnection) -> str:
    client = conn.client
    return f"{client.host}:{client.port}" if client else "?"


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("scheme", "use 'Authorization: Bearer <token>'")
        return value.strip()
    if conn.scope["type"] == "websocket":
        return conn.query_params.get("access_token")
    return None


def authenticate(conn: HTTPConnection, scope: str) -> Claims | None:
    """Claims for the caller, None when authentication is off; AuthError when refused."""
    access = gateway_state(conn).access
    if access is None:
        return None
    channel = "ws" if conn.scope["type"] == "websocket" else "http"
    try:
        token = bearer(conn)
    except AuthError as exc:
        access.refused(channel, peer(conn), exc.reason, str(exc))
        raise
    return access.check(token, scope, channel=f"{channel} {conn.url.path}", peer=peer(conn))


@functools.cache
def require(scope: str) -> Callable[[HTTPConnection], Awaitable[Claims | None]]:
    """One dependency object per scope: FastAPI then runs it once per request even when both
    a router and its endpoint ask for it (a one-time token must not be spent twice)."""
    async def dependency(conn: HTTPConnection) -> Claims | None:
        try:
            return authenticate(conn, scope)
        except AuthError as exc:
            challenge = CHALLENGE if exc.status == 401 else \
                f'{CHALLENGE}, error="insufficient_scope", scope="{scope}"'
            raise APIError(exc.status, str(exc), code=exc.reason,
                           headers={"WWW-Authenticate": challenge}) from None

    return dependency


def principal(claims: Claims | None) -> str | None:
    """Whose conversations a caller may read: None (any) when auth is off or for admins."""
    if claims is None or claims.allows("admin"):
        return None
    return claims.sub


def author(claims: Claims | None) -> str | None:
    """Who owns what a caller writes: its subject, admins included (so no conversation an
    admin starts is left open to everyone); None when auth is off."""
    return claims.sub if claims is not None else None
