"""The skills on a real appliance (the real engine, embedding model and gateway, real HTTP):
a message goes to the skill it is for, with its intent and confidence in the message's trace,
or to plain chat; a handoff reaches a staff endpoint, signed, through the outbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Appliance
from tests.polling import until

pytestmark = pytest.mark.e2e

BRANCH = """
name = "Riverside branch"
[hours]
monday = "09:00-17:00"
tuesday = "09:00-17:00"
wednesday = "09:00-17:00"
thursday = "09:00-17:00"
friday = "09:00-18:00"
saturday = "09:30-12:30"
sunday = "closed"

[[faq]]
question = "Is there parking at the branch?"
answer = "Yes: twelve free spaces behind the building, for up to two hours."
[[faq]]
question = "有停车位吗？"
answer = "有的：大楼后面有十二个免费车位，可停两小时。"
"""
RATES = 'base = "CNY"\ndate = "2026-12-01"\n[rates]\nUSD = 7.0\nEUR = 7.7\n'


class Staff(ThreadingHTTPServer):
    """A staff endpoint: records what it receives; answers 503 while ``down``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StaffHandler)
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.refused: list[str] = []
        self.down = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/handoff"


class StaffHandler(BaseHTTPRequestHandler):
    server: Staff

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.down:
            self.server.refused.append(json.loads(body)["conversation"])
            self.send_response(503)
        else:
            self.server.received.append((dict(self.headers), json.loads(body)))
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def staff() -> Iterator[Staff]:
    server = Staff()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], staff: Staff) -> Appliance:
    box = start_module_appliance(APPLIANCE_SKILLS__HANDOFF_URL=staff.url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="0.5")
    (box.data_dir / "branch.toml").write_text(BRANCH, encoding="utf-8")
    (box.data_dir / "rates.toml").write_text(RATES, encoding="utf-8")
    return box


@pytest.fixture(scope="module")
def http(box: Appliance) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.base_url, timeout=180) as client:
        yield client


def ask(http: httpx.Client, text: str, conversation: str | None = None) -> dict[str, Any]:
    conversation = conversation or f"skills-{uuid.uuid4().hex[:8]}"
    reply = http.post("/v1/messages", json={"conversation": conversation, "text": text,
                                            "id": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    detail = http.get(f"/v1/conversations/{conversation}/messages/{body['id']}").json()
    return {**body, "intent": detail["message"]["intent"],
            "trace": [t for t in detail["transitions"] if t["state"] == "intent"]}


def test_opening_hours_come_from_the_branch_file(http: httpx.Client) -> None:
    answer = ask(http, "Are you open on Saturday?")
    assert answer["reply"] == "Riverside branch opening hours — Saturday: 09:30–12:30."
    assert answer["intent"] == "hours"


def test_a_question_in_chinese_gets_its_answer_in_chinese(http: httpx.Client) -> None:
    answer = ask(http, "周日开门吗？")
    assert (answer["intent"], answer["reply"]) == \
        ("hours", "Riverside branch营业时间 — 周日：休息。")


def test_the_chosen_intent_and_its_confidence_are_in_the_trace(http: httpx.Client) -> None:
    [line] = ask(http, "When are you open tomorrow?")["trace"]
    label, confidence = line["note"].split(" ")
    assert label == "hours" and 0.4 <= float(confidence.strip("()")) <= 1.0


def test_the_branchs_faq_answers_its_own_question(http: httpx.Client) -> None:
    answer = ask(http, "Do you have parking?")
    assert (answer["intent"], answer["reply"]) == \
        ("faq", "Yes: twelve free spaces behind the building, for up to two hours.")


def test_a_calculation_is_worked_out_not_guessed(http: httpx.Client) -> None:
    assert ask(http, "What is 45 times 12?")["reply"] == "45 × 12 = 540"
    assert ask(http, "100美元换多少人民币？")["reply"] == \
        "100 USD = 700 CNY（2026-12-01汇率，仅供参考）"


def test_small_talk_goes_to_the_assistant(http: httpx.Client) -> None:
    answer = ask(http, "Good evening!")
    assert answer["intent"] == "chat" and answer["reply"]
    assert answer["trace"][0]["note"].startswith("chat (")


def test_an_edit_of_the_branch_file_is_used_without_a_restart(box: Appliance,
                                                              http: httpx.Client) -> None:
    path = box.data_dir / "branch.toml"
    path.write_text(BRANCH.replace('saturday = "09:30-12:30"', 'saturday = "10:00-13:00"'),
                    encoding="utf-8")
    try:
        assert ask(http, "Are you open on Saturday?")["reply"].endswith("Saturday: 10:00–13:00.")
    finally:
        path.write_text(BRANCH, encoding="utf-8")


def test_a_skill_is_asked_by_name_with_slash_skill(http: httpx.Client) -> None:
    assert ask(http, "/skill calc 2+2")["reply"] == "2+2 = 4"
    assert ask(http, "/skill")["reply"] == \
        "Skills: calc, faq, handoff, hours, kb. Ask one with /skill NAME REQUEST."
    assert ask(http, "/skill weather Beijing")["reply"].startswith("Unknown skill 'weather'")


def test_a_handoff_reaches_the_staff_signed_with_the_conversation_so_far(
        http: httpx.Client, staff: Staff) -> None:
    conversation = f"handoff-{uuid.uuid4().hex[:8]}"
    ask(http, "Good morning", conversation)
    answer = ask(http, "I want to talk to a person", conversation)
    assert answer["intent"] == "handoff"
    assert answer["reply"].startswith("I've passed this conversation to the branch's staff")
    until(lambda: any(b["conversation"] == conversation for _, b in staff.received),
          "handoff at the staff endpoint", timeout=30)
    headers, body = next((h, b) for h, b in staff.received if b["conversation"] == conversation)
    assert body["text"] == "I want to talk to a person"
    assert [t["question"] for t in body["recent"]] == ["Good morning"]
    assert headers["X-Appliance-Signature"].startswith("ed25519;kid=")


def test_a_handoff_waits_in_the_outbox_while_the_staff_endpoint_is_down(
        http: httpx.Client, staff: Staff) -> None:
    conversation = f"handoff-{uuid.uuid4().hex[:8]}"
    staff.down = True
    try:
        assert ask(http, "转人工", conversation)["reply"] == \
            "已为您转接网点工作人员，他们会在这里回复您。"
        until(lambda: conversation in staff.refused, "a refused handoff attempt", timeout=30)
    finally:
        staff.down = False
    until(lambda: any(b["conversation"] == conversation for _, b in staff.received),
          "handoff after the endpoint came back", timeout=30)


def test_every_skill_call_is_audited_with_its_arguments_sealed(box: Appliance,
                                                               http: httpx.Client) -> None:
    conversation = f"audit-{uuid.uuid4().hex[:8]}"
    ask(http, "What is 731 times 19?", conversation)
    ask(http, "Do you sell lottery tickets?", conversation)  # no FAQ entry: chat answers
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    listed = subprocess.run([sys.executable, "-m", "appliance", "audit", "tools", "--since",
                             "1h", "--json"], env=env, capture_output=True, text=True,
                            check=True)
    calls = [c for c in json.loads(listed.stdout) if c["conversation"] == conversation]
    calc = next(c for c in calls if c["skill"] == "calc")
    assert (calc["status"], calc["plugin"]) == ("answered", "builtin")
    assert calc["arguments"] == {"request": "What is 731 times 19?"}
    assert calc["who"].startswith("user:") and calc["duration_ms"] >= 0
    assert all(c["status"] in ("answered", "declined") for c in calls)
    stored = b"".join(p.read_bytes() for p in Path(box.data_dir).glob("appliance.db*"))
    assert b"731 times 19" not in stored
