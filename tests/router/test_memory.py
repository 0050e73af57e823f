"""Long conversations against the real appliance: a history far past the prompt's budget never
fails a message, what fell out of the window is in the conversation's summary, and /reset
clears it. The model is the real default one; with ``engine.max_prompt_tokens`` the CPU box
fits prompts as an NPU box (1,024 tokens) must."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Appliance
from tests.polling import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
FACT = "My name is Alice Moreau and my account number is 4471-2209."
FILLER = ("Please tell me about the branch's services for small shops, the opening hours and "
          "what papers I should bring, topic {n}.")
QUICK = {"APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS": "12",
         "APPLIANCE_CHAT__SUMMARY_MIN_INTERVAL_S": "2", "APPLIANCE_CHAT__SUMMARY_MAX_TOKENS": "32"}


def say(box: Appliance, conversation: str, n: int, text: str) -> dict[str, Any]:
    response = httpx.post(f"{box.base_url}/v1/messages", timeout=300, json={
        "id": f"m{n:03d}", "conversation": conversation, "sender": "alice", "text": text})
    assert response.status_code == 200, response.text
    return response.json()


def summary(box: Appliance, conversation: str, message_id: str) -> dict[str, Any] | None:
    """The conversation's summary as ``appliance messages show`` prints it."""
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    shown = subprocess.run([sys.executable, "-m", "appliance", "messages", "show", message_id,
                            "--conversation", conversation, "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] | None = json.loads(shown.stdout)[0]["summary"]
    return found


@pytest.fixture(scope="module")
def npu_sized(start_module_appliance: Callable[..., Appliance]) -> Appliance:
    return start_module_appliance(APPLIANCE_ENGINE__MAX_PROMPT_TOKENS="1024", **QUICK)


def test_two_hundred_turns_never_fail_within_an_npu_prompt_limit(npu_sized: Appliance) -> None:
    conversation = f"long-{uuid.uuid4().hex[:8]}"
    states = [say(npu_sized, conversation, n, FACT if n == 0 else FILLER.format(n=n))["state"]
              for n in range(200)]
    assert set(states) <= {"answered", "delivered"}, states


def test_a_fact_from_the_first_turn_is_in_the_summary_at_turn_fifty(npu_sized: Appliance) -> None:
    conversation = f"fact-{uuid.uuid4().hex[:8]}"
    for n in range(50):
        say(npu_sized, conversation, n, FACT if n == 0 else FILLER.format(n=n))
    until(lambda: (summary(npu_sized, conversation, "m049") or {}).get("upto_seq", 0) >= 1,
          "summary of the fallen-out turns", timeout=120, interval=1)
    text = summary(npu_sized, conversation, "m049")["text"]  # type: ignore[index]
    assert "Alice Moreau" in text and "4471-2209" in text


def test_reset_clears_the_summary(npu_sized: Appliance) -> None:
    conversation = f"reset-{uuid.uuid4().hex[:8]}"
    for n in range(40):
        say(npu_sized, conversation, n, FACT if n == 0 else FILLER.format(n=n))
    until(lambda: summary(npu_sized, conversation, "m039") is not None, "summary",
          timeout=120, interval=1)
    assert say(npu_sized, conversation, 40, "/reset")["state"] in ("answered", "delivered")
    assert summary(npu_sized, conversation, "m040") is None


def test_a_long_conversation_on_the_cpu_limits_never_fails(
        start_module_appliance: Callable[..., Appliance]) -> None:
    box = start_module_appliance(**QUICK)
    conversation = f"cpu-{uuid.uuid4().hex[:8]}"
    states = [say(box, conversation, n, f"Tell me about topic {n}.")["state"]
              for n in range(200)]
    assert set(states) <= {"answered", "delivered"}, states
