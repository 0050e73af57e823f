"""The one shape every inbound message takes, whatever protocol brought it."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
Channel = Literal["http", "ws", "mqtt", "webhook", "im"]


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SAFE_ID, description="Chosen by the sender; a repeat is a duplicate.")
    conversation: str = Field(pattern=SAFE_ID)
    channel: Channel
    sender: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1)
    reply_to: str = Field("", max_length=256, description="Channel-specific reply address.")
    received: float = Field(default_factory=time.time)
    principal: str | None = Field(
        None, description="Authenticated subject that sent it; None when authentication is off "
        "or the caller is an admin, which skips the conversation-ownership check.")
