"""The pipeline's refusals, typed once (appliance/router/admission.py), and the two error
builders that translate them: HTTP (gateway/errors.py) and the message channels' error event
(WebSocket frames, MQTT error replies)."""

from __future__ import annotations

import pytest

from appliance.gateway.errors import refusal_error
from appliance.router.admission import (
    ConversationForbidden,
    EmptyText,
    ForbiddenSender,
    Refused,
    TextTooLong,
    check_text,
    refusal_event,
    sender_for,
)
from appliance.router.drain import Draining


def test_blank_text_is_refused_as_empty() -> None:
    with pytest.raises(EmptyText):
        check_text("  \n", 100)


def test_text_past_the_limit_is_refused_with_both_lengths() -> None:
    with pytest.raises(TextTooLong, match="text has 5 characters; the limit is 4"):
        check_text("hello", 4)


def test_an_authenticated_caller_speaks_as_its_subject() -> None:
    assert sender_for("http", False, "alice") == "alice"
    assert sender_for("kiosk", True, None) == "kiosk"
    with pytest.raises(ForbiddenSender, match="'alice'"):
        sender_for("bob", True, "alice")


@pytest.mark.parametrize(("refused", "status", "code", "param"), [
    (EmptyText(10), 400, "empty_message", "text"),
    (TextTooLong(11, 10), 413, "text_too_long", "text"),
    (ConversationForbidden("c1"), 403, "forbidden", "conversation"),
    (ForbiddenSender("alice"), 403, "forbidden", "sender"),
    (Draining(), 503, "draining", None)])
def test_http_gives_each_refusal_its_status_and_code(refused: Refused, status: int, code: str,
                                                     param: str | None) -> None:
    error = refusal_error(refused)
    assert (error.status, error.code, error.param) == (status, code, param)
    assert error.message == str(refused)


def test_http_tells_a_draining_client_when_to_retry() -> None:
    assert refusal_error(Draining()).retry_after == Draining.retry_after


def test_the_message_channels_call_a_text_refusal_an_invalid_message() -> None:
    assert refusal_event(TextTooLong(11, 10), "m1") == {
        "type": "error", "id": "m1", "code": "invalid_message",
        "message": "text must be 1 to 10 characters and not blank"}


def test_the_message_channels_keep_the_other_refusals_codes() -> None:
    event = refusal_event(ConversationForbidden("c1"), None)
    assert (event["code"], event["id"]) == ("forbidden", None)
    assert refusal_event(Draining(), "m2")["code"] == "draining"
