"""The MQTT contract's topic names, and which a client may use.

A device publishes requests to ``appliance/v1/req/{client_id}`` and subscribes to its own
replies under ``appliance/v1/res/{client_id}/...`` (``ack``, ``tokens``, ``reply``) and errors on
``appliance/v1/err/{client_id}``. Client ids are restricted to a safe alphabet, so a client id
can never smuggle a ``/``, ``+`` or ``#`` into a topic.
"""

from __future__ import annotations

import re

PREFIX = "appliance/v1"
SAFE_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def request_topic(client_id: str) -> str:
    return f"{PREFIX}/req/{client_id}"


def reply_topic(client_id: str, kind: str) -> str:
    return f"{PREFIX}/res/{client_id}/{kind}"


def error_topic(client_id: str) -> str:
    return f"{PREFIX}/err/{client_id}"


def topic_client_id(topic: str) -> str:
    """The device a reply or error topic addresses (``appliance/v1/res/{id}/...``)."""
    return topic.split("/")[3] if topic.count("/") >= 3 else ""


def is_safe_client_id(client_id: str | None) -> bool:
    return bool(client_id) and bool(SAFE_CLIENT_ID.match(client_id or ""))


def may_publish(client_id: str, topic: str, strict: bool = False) -> bool:
    """Devices publish only their own requests; nobody may write into the appliance's
    namespace as someone else. ``strict`` (authenticated devices): nothing but that topic."""
    if topic.startswith(f"{PREFIX}/"):
        return topic == request_topic(client_id)
    return not strict


def may_subscribe(client_id: str, topic_filter: str, strict: bool = False,
                  admin: bool = False) -> bool:
    """Only one's own replies and errors inside the appliance namespace; a wildcard that
    would reach into it (``#``, ``appliance/#``, ``appliance/v1/res/+/...``) is refused.
    ``strict``: nothing else either. An admin may watch everything."""
    if admin or topic_filter == error_topic(client_id) or topic_filter.startswith(
            f"{PREFIX}/res/{client_id}/"):
        return True
    if strict:
        return False
    reaches_in = _filter_matches_prefix(topic_filter, PREFIX.split("/"))
    return not reaches_in


def _filter_matches_prefix(topic_filter: str, prefix_levels: list[str]) -> bool:
    levels = topic_filter.split("/")
    for index, expected in enumerate(prefix_levels):
        if index >= len(levels):
            return False
        level = levels[index]
        if level == "#":
            return True
        if level not in ("+", expected):
            return False
    return True
