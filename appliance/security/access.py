"""One decision for every listener: may this credential do this? Refusals are logged and
counted the same way whichever protocol brought them."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from appliance.config import Settings
from appliance.security.replay import ReplayGuard
from appliance.security.tokens import AuthError, Claims, SigningKeys, TokenVerifier

audit = logging.getLogger("appliance.security.audit")

Refused = Callable[[str, str], None]


def signing_keys(settings: Settings) -> SigningKeys:
    return SigningKeys(settings.paths.secrets_dir / "jwt")


class Access:
    def __init__(self, settings: Settings, connection: sqlite3.Connection,
                 on_refused: Refused | None = None) -> None:
        security = settings.security
        self.keys = signing_keys(settings)
        self.verifier = TokenVerifier(self.keys, issuer=security.issuer,
                                      audience=security.audience,
                                      leeway_s=security.token_leeway_s,
                                      max_bytes=security.token_max_bytes)
        self.guard = ReplayGuard(connection)
        self.leeway_s = security.token_leeway_s
        self.on_refused = on_refused

    def check(self, token: str | None, scope: str, *, channel: str, peer: str) -> Claims:
        """The caller's claims if ``token`` grants ``scope``; AuthError otherwise (logged)."""
        try:
            claims = self.verifier.verify(token or "")
            if self.guard.is_revoked(claims.jti):
                raise AuthError("revoked", "token has been revoked")
            if not claims.allows(scope):
                raise AuthError("scope", f"token lacks the '{scope}' scope", status=403)
            if claims.once and not self.guard.first_use("once", claims.jti,
                                                        claims.exp + self.leeway_s):
                raise AuthError("replayed", "one-time token already used")
        except AuthError as exc:
            self.refused(channel, peer, exc.reason, str(exc))
            raise
        return claims

    def refused(self, channel: str, peer: str, reason: str, detail: str) -> None:
        log_refusal(channel, peer, reason, detail)
        if self.on_refused is not None:
            self.on_refused(channel, reason)


def log_refusal(channel: str, peer: str, reason: str, detail: str) -> None:
    """The audit trail: one line per refused credential, whatever the protocol."""
    audit.warning("refused %s from %s: %s (%s)", channel, peer, reason, detail)
