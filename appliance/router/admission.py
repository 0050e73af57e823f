"""Why the pipeline refuses a message, typed: every channel turns a :class:`Refused` into its
own protocol's error (HTTP status and body, an MQTT error reply, a WebSocket error frame)
through its one error builder, so the rules live here once and the edges only translate."""

from __future__ import annotations


class Refused(Exception):
    """A message the pipeline will not take; ``code`` is the same on every channel."""

    code = "refused"
    param: str | None = None
    retry_after: int | None = None


class EmptyText(Refused):
    code, param = "empty_message", "text"

    def __init__(self, limit: int) -> None:
        super().__init__("text is empty")
        self.limit = limit


class TextTooLong(Refused):
    code, param = "text_too_long", "text"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"text has {length} characters; the limit is {limit}")
        self.length, self.limit = length, limit


class ConversationForbidden(Refused):
    code, param = "forbidden", "conversation"

    def __init__(self, conversation: str) -> None:
        super().__init__(f"conversation {conversation!r} belongs to another sender")
        self.conversation = conversation


class ForbiddenSender(Refused):
    code, param = "forbidden", "sender"

    def __init__(self, subject: str) -> None:
        super().__init__(f"sender must be your token's subject {subject!r}")
        self.subject = subject


def check_text(text: str, limit: int) -> None:
    if not text.strip():
        raise EmptyText(limit)
    if len(text) > limit:
        raise TextTooLong(len(text), limit)


def sender_for(requested: str, requested_explicitly: bool, subject: str | None) -> str:
    """An authenticated caller speaks as its token's subject; naming someone else is refused.
    Without authentication the sender is what the caller says."""
    if subject is None:
        return requested
    if requested_explicitly and requested != subject:
        raise ForbiddenSender(subject)
    return subject


def refusal_event(refused: Refused, message_id: str | None) -> dict[str, object]:
    """The error event of the message channels (WebSocket frame, MQTT error reply): a text
    refusal is ``invalid_message`` there, as every other malformed field is."""
    code, text = refused.code, str(refused)
    if isinstance(refused, EmptyText | TextTooLong):
        code = "invalid_message"
        text = f"text must be 1 to {refused.limit} characters and not blank"
    return {"type": "error", "id": message_id, "code": code, "message": text}
