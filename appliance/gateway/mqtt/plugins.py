"""amqtt plugins: who may connect, and which topics a device may use.

amqtt replaces all of its default plugins once a plugins map is given, so these are the
whole set. Mind its conventions: an auth result of None is ignored but a topic result of None
*denies*. (Requests do not come through a plugin hook: hooks run fire-and-forget after the
broker has already acknowledged the publish; see ``broker.ApplianceHandler``.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.broker import BrokerContext
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from appliance.gateway.mqtt.topics import is_safe_client_id, may_publish, may_subscribe

log = logging.getLogger(__name__)


class DeviceAuth(BaseAuthPlugin):
    """Refuses client ids that could inject topic levels. (Credentials arrive with security.)

    It also clears amqtt's anonymous flag, which would otherwise deny every client an offline
    queue and reap its persistent session a second after it disconnects.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        session.is_anonymous = False
        if not is_safe_client_id(session.client_id):
            log.warning("refused MQTT client id %r: use 1-128 of A-Z a-z 0-9 . _ : -",
                        session.client_id)
            return False
        return True


class DeviceTopics(BaseTopicPlugin):
    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        client_id = session.client_id if session else ""
        if action == Action.PUBLISH:
            allowed = may_publish(client_id, topic or "")
        elif action == Action.SUBSCRIBE:
            allowed = may_subscribe(client_id, topic or "")
        else:
            return True  # RECEIVE: must be an explicit True, None would deny every delivery
        if not allowed:
            log.warning("MQTT client %s may not %s %s", client_id, action, topic)
        return allowed


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
