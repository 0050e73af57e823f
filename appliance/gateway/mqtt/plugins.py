"""amqtt plugins: who may connect, and the subscription hook of the bridge.

amqtt replaces all of its default plugins once a plugins map is given, so these are the whole
set. Topic rights are not a plugin: ``ApplianceBroker._topic_filtering`` applies ``topics``
directly, as the plugin path costs several tasks per message. Requests do not come through a
plugin hook either: hooks run fire-and-forget after the broker has already acknowledged the
publish (see ``broker.ApplianceHandler``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.broker import BrokerContext
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin
from amqtt.session import Session

from appliance.gateway.mqtt.topics import is_safe_client_id
from appliance.security.access import Access
from appliance.security.tokens import AuthError

log = logging.getLogger(__name__)


class DeviceAuth(BaseAuthPlugin):
    """Who may connect: a safe client id, and (with ``security.auth``) a valid token with the
    ``chat`` scope as the CONNECT password, whose subject is the client id. The username is
    required by MQTT when a password is sent; its value is not used.

    It also clears amqtt's anonymous flag, which would otherwise deny every client an offline
    queue and reap its persistent session a second after it disconnects.
    """

    @dataclass
    class Config:
        access: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        session.is_anonymous = False
        if not is_safe_client_id(session.client_id):
            log.warning("refused MQTT client id %r: use 1-128 of A-Z a-z 0-9 . _ : -",
                        session.client_id)
            return False
        access: Access | None = self.config.access
        if access is None:
            return True
        peer = f"{session.client_id}@{session.remote_address}:{session.remote_port}"
        password = session.password
        token = password.decode(errors="replace") if isinstance(password, bytes) else password
        try:
            claims = access.check(token, "chat", channel="mqtt", peer=peer)
        except AuthError:
            return False
        if claims.sub != session.client_id and not claims.allows("admin"):
            access.refused("mqtt", peer, "identity",
                           f"client id must be the token's subject {claims.sub!r}")
            return False
        session.appliance_scopes = claims.scopes
        session.appliance_jti = claims.jti
        session.appliance_exp = claims.exp
        return True


class SubscriptionHook(BasePlugin[BrokerContext]):
    """Tells the bridge when a device (re)subscribes to its replies, so that replies it has
    not acknowledged yet (answered while it was away, or before a gateway restart) are sent."""

    @dataclass
    class Config:
        bridge: Any = None

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str,
                                          qos: int) -> None:
        if self.config.bridge is not None:
            try:
                await self.config.bridge.subscribed(client_id, topic)
            except Exception:  # hooks' exceptions are swallowed by amqtt: log them here
                log.exception("resending replies to %s failed", client_id)
