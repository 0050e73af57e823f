"""Instant-messaging platforms, one module each (see ``common.py`` for what they share).

Adding a platform: a module with a ``router`` (its inbound endpoint under
``/v1/im/<platform>/{name}``) and an :class:`~appliance.gateway.im.common.ImSender`, listed in
:data:`ROUTERS` and :func:`senders`; its API base URL is a setting in ``[im]``.
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter

from appliance.config import ImSettings
from appliance.gateway.im import dingtalk, feishu, slack, telegram, wecom
from appliance.gateway.im.common import ImSender
from appliance.store.im_integrations import ImIntegrations

ROUTERS: list[APIRouter] = [telegram.router, wecom.router, dingtalk.router,
                            feishu.router, slack.router]


def senders(integrations: ImIntegrations, settings: ImSettings, client: httpx.AsyncClient
            ) -> list[ImSender]:
    return [telegram.TelegramSender(integrations, client, settings.telegram_api_base),
            wecom.WeComSender(integrations, client, settings.wecom_api_base),
            dingtalk.DingTalkSender(integrations, client, settings.dingtalk_api_base),
            feishu.FeishuSender(integrations, client, settings.feishu_api_base),
            slack.SlackSender(integrations, client, settings.slack_api_base)]
