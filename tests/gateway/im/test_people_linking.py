"""One person across WeCom, the web chat and an MQTT device (issue 16): "a person linked
across WeCom, the web chat and an MQTT device holds one conversation, in order, with no
duplicate replies".

Against a real appliance with tokens required: the web chat is a token's subject (in headless
Chromium on ``/chat``, or its WebSocket protocol on ``/v1/ws``), the device a paho client whose
client id is its token's subject, and WeCom a fake of WeCom's server API with callbacks
encrypted and signed as WeCom's documentation publishes them (``wecom_platform``). A person
links their apps with ``/link`` (a one-time code) and ``/link CODE`` on the other app, or the
operator with ``appliance people link``; ``/follow`` on an app brings it the answers to what
the person asks elsewhere.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.browser import Page, checked, needs_chromium
from tests.conftest import Appliance
from tests.gateway.im.fake_platform import FakePlatform, cli
from tests.gateway.im.wecom_platform import (
    MSG_IDS,
    WeComApi,
    add_integration,
    callback,
    text_message,
)
from tests.mqtt_device import Device
from tests.polling import until
from tests.security.conftest import auth, operator_token

pytestmark = pytest.mark.e2e
CODE = re.compile(r"Your link code is (\d{6})\b")
REFUSED = ("Not linked: that link code is unknown, used or expired; ask for a new one with "
           "/link on the app you already use.")
ANSWER_S = 180   # an answer from the model on a busy two-core box
SETTLE_S = 3     # how long a reply that should not come is given to show up anyway


# -- the three apps ---------------------------------------------------------------------------

class WeComUser:
    """A WeCom user writing to the branch's app: each message a callback as WeCom sends it;
    what the box answers is what the fake API's message/send took for this user."""

    def __init__(self, box: Appliance, api: WeComApi) -> None:
        self.box, self.api = box, api
        self.user = f"wx{uuid.uuid4().hex[:10]}"
        self.last = ""

    @property
    def identity(self) -> str:
        return f"wecom:branch:{self.user}"

    def say(self, text: str, msg_id: int | None = None) -> str:
        """Send ``text`` (stored by the box once this returns) with a new MsgId, or again
        with ``msg_id`` as WeCom's retry does; the box's id of the message."""
        msg_id = next(MSG_IDS) if msg_id is None else msg_id
        reply = callback(self.box, text_message(self.user, text, msg_id))
        assert reply.status_code == 200 and reply.content == b"", reply.text
        self.last = f"m-{msg_id}"  # the adapter's envelope id for a MsgId
        return self.last

    def received(self) -> list[str]:
        return self.api.texts_to(self.user)

    def ask(self, text: str) -> str:
        """Send ``text`` and wait for the next message the app gets."""
        before = len(self.received())
        self.say(text)
        until(lambda: len(self.received()) > before, f"a WeCom answer to {text!r}", ANSWER_S)
        return self.received()[before]


class WebChatSocket:
    """The web chat's protocol on ``/v1/ws``, as ``chat.js`` speaks it: signed in with a chat
    token, each question a ``message`` frame in a conversation the page named ``web-...``."""

    def __init__(self, box: Appliance, token: str) -> None:
        self.ws = connect(f"ws://127.0.0.1:{box.port}/v1/ws?access_token={token}",
                          open_timeout=10)
        self.conversation = f"web-{uuid.uuid4().hex[:12]}"
        self.frames: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for frame in self.ws:
                with self._lock:
                    self.frames.append(json.loads(frame))
        except ConnectionClosed:
            pass

    def send(self, text: str, message_id: str | None = None) -> str:
        message_id = message_id or f"m-{uuid.uuid4().hex[:12]}"
        self.ws.send(json.dumps({"type": "message", "id": message_id,
                                 "conversation": self.conversation, "text": text}))
        return message_id

    def of(self, kind: str, message_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [f for f in self.frames if f.get("type") == kind
                    and (message_id is None or f.get("id") == message_id)]

    def ack(self, message_id: str) -> dict[str, Any]:
        until(lambda: self.of("ack", message_id), f"the ack of {message_id}", 30)
        return self.of("ack", message_id)[0]

    def reply(self, message_id: str) -> dict[str, Any]:
        until(lambda: self.of("reply", message_id), f"the web chat's answer to {message_id}",
              ANSWER_S)
        return self.of("reply", message_id)[0]

    def ask(self, text: str) -> str:
        return str(self.reply(self.send(text))["text"])

    def replies(self) -> list[str]:
        """The ids of the answers this socket was given, one entry per reply frame."""
        return [f["id"] for f in self.of("reply")]

    def close(self) -> None:
        self.ws.close()
        self._reader.join(timeout=10)


class Kiosk:
    """An MQTT device (client id = its token's subject) asking in its own conversation."""

    def __init__(self, box: Appliance, token: str, subject: str) -> None:
        self.device = Device(box, subject, token=token).connect()
        self.device.subscribe_own()
        self.id = subject

    @property
    def identity(self) -> str:
        return f"user:{self.id}"

    def send(self, text: str) -> str:
        message_id = f"k-{uuid.uuid4().hex[:12]}"
        self.device.request({"id": message_id, "text": text})
        return message_id

    def ack(self, message_id: str) -> dict[str, Any]:
        return self.device.wait_for("/ack", lambda m: m["id"] == message_id)

    def reply(self, message_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [m for m in self.device.messages("/reply") if m["id"] == message_id]
            return bool(found)

        until(seen, f"the device's answer to {message_id}", ANSWER_S)
        return found[0]

    def ask(self, text: str) -> str:
        return str(self.reply(self.send(text))["text"])

    def replies(self) -> list[str]:
        return [m["id"] for m in self.device.messages("/reply")]

    def close(self) -> None:
        self.device.close()


@dataclass
class Apps:
    """One person's three apps (not linked yet)."""

    wecom: WeComUser
    web: WebChatSocket
    web_subject: str
    web_token: str
    kiosk: Kiosk

    @property
    def web_identity(self) -> str:
        return f"user:{self.web_subject}"


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api() -> WeComApi:
    return WeComApi()


@pytest.fixture(scope="module")
def fake(api: WeComApi) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    # Short answers: one answer is one WeCom message (a long one is split at 2,048 bytes,
    # and these tests count the messages each app receives).
    box = start_module_appliance(APPLIANCE_SECURITY__AUTH="true",
                                 APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS="96",
                                 APPLIANCE_IM__WECOM_API_BASE=fake.base_url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    add_integration(box, tmp_path_factory.mktemp("wecom"))
    return box


@pytest.fixture
def apps(box: Appliance, api: WeComApi) -> Iterator[Apps]:
    """A new person's WeCom account, web chat (signed in) and MQTT device, each on its own."""
    web_subject, kiosk_subject = f"teller-{uuid.uuid4().hex[:8]}", f"kiosk-{uuid.uuid4().hex[:8]}"
    web_token = operator_token(box, web_subject, "chat")
    web = WebChatSocket(box, web_token)
    kiosk = Kiosk(box, operator_token(box, kiosk_subject, "chat"), kiosk_subject)
    yield Apps(WeComUser(box, api), web, web_subject, web_token, kiosk)
    web.close()
    kiosk.close()


@pytest.fixture
def linked(apps: Apps) -> Apps:
    """The same three apps linked the person's way: /link on WeCom, /link CODE on the others."""
    for redeem in (apps.web.ask, apps.kiosk.ask):
        code = code_from(apps.wecom.ask("/link"))
        assert redeem(f"/link {code}").startswith("Linked:")
    return apps


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    page = Page(tmp_path_factory.mktemp("chromium"))
    yield page
    page.close()


@pytest.fixture
def page(browser: Page) -> Iterator[Page]:
    yield from checked(browser)


# -- helpers ----------------------------------------------------------------------------------

def code_from(reply: str) -> str:
    found = CODE.search(reply)
    assert found, reply
    return found.group(1)


def people(box: Appliance) -> dict[str, list[dict[str, Any]]]:
    """``appliance people list --json``."""
    done = cli(box, "people", "list", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return found


def person_of(box: Appliance, identity: str) -> str | None:
    return next((person for person, identities in people(box).items()
                 if identity in [i["identity"] for i in identities]), None)


def history(box: Appliance, token: str, conversation: str) -> list[dict[str, Any]]:
    """The conversation's messages as the web chat reads them (its own token)."""
    reply = httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages",
                      headers=auth(token), timeout=30)
    assert reply.status_code == 200, reply.text
    messages: list[dict[str, Any]] = reply.json()["messages"]
    return messages


def shown(box: Appliance, message_id: str) -> list[dict[str, Any]]:
    """``appliance messages show ID --json``: the stored message(s) with that id."""
    done = cli(box, "messages", "show", message_id, "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def settle() -> None:
    """Give a reply that must not come the time it would have taken to come."""
    time.sleep(SETTLE_S)


# -- the web chat in Chromium -----------------------------------------------------------------

def open_chat(page: Page, box: Appliance, token: str) -> None:
    """The chat page signed in with ``token``, as a browser that never saw it."""
    page.goto(f"{box.base_url}/chat")
    page.evaluate("sessionStorage.clear(); localStorage.clear(); true")
    page.goto(f"{box.base_url}/chat?access_token={token}")
    page.wait_for("!document.getElementById('chat').hidden && document.getElementById("
                  "'connection').dataset.state === 'connected' && document.getElementById("
                  "'messages').dataset.loaded === 'true'")


def type_and_send(page: Page, text: str) -> str:
    """Type ``text``, press Send; the id of the message the page sent. (The box's ack may
    move the page to the person's conversation, which it then loads afresh: the turn is
    looked for by its text once the list is loaded, not taken as the last one.)"""
    page.type("#question", text)
    page.click("#send")
    find = (f"[...document.querySelectorAll('#messages li.turn')].find(li => "
            f"li.querySelector('.msg.user .text').textContent === {json.dumps(text)})")
    page.wait_for(f"document.getElementById('messages').dataset.loaded === 'true' && "
                  f"{find} !== undefined")
    return str(page.evaluate(f"{find}.dataset.id"))


def answer_shown(page: Page, message_id: str) -> dict[str, Any]:
    """The turn of ``message_id`` on the page once its answer is final."""
    selector = json.dumps(f'#messages li.turn[data-id="{message_id}"]')
    page.wait_for(f"""(() => {{ const li = document.querySelector({selector});
        return li && ['done', 'failed', 'refused'].includes(
          li.querySelector('.msg.bot').dataset.state); }})()""", timeout=ANSWER_S)
    turn = page.evaluate(f"""(() => {{ const li = document.querySelector({selector});
        const bot = li.querySelector('.msg.bot');
        return {{question: li.querySelector('.msg.user .text').textContent,
                 text: bot.querySelector('.text').textContent, state: bot.dataset.state,
                 error: bot.querySelector('.error').textContent}}; }})()""")
    assert isinstance(turn, dict)
    return turn


def turns_shown(page: Page) -> list[list[str]]:
    """[question, state] of every turn on the page, top to bottom."""
    turns = page.evaluate("[...document.querySelectorAll('#messages li.turn')].map((li) => "
                          "[li.querySelector('.msg.user .text').textContent, "
                          "li.querySelector('.msg.bot').dataset.state])")
    assert isinstance(turns, list)
    return turns


# -- linking ----------------------------------------------------------------------------------

@needs_chromium
def test_a_code_from_wecom_links_the_web_chat_in_the_browser_and_the_device(
        box: Appliance, apps: Apps, page: Page) -> None:
    code = code_from(apps.wecom.ask("/link"))
    open_chat(page, box, apps.web_token)
    turn = answer_shown(page, type_and_send(page, f"/link {code}"))
    assert turn["state"] == "done", turn
    assert turn["text"].startswith("Linked: this app now shares one conversation with 1 other "
                                   "app."), turn
    second = code_from(apps.wecom.ask("/link"))
    assert second != code
    assert apps.kiosk.ask(f"/link {second}").startswith(
        "Linked: this app now shares one conversation with 2 other apps.")
    person = person_of(box, apps.wecom.identity)
    assert person is not None
    assert sorted(i["identity"] for i in people(box)[person]) == sorted(
        [apps.wecom.identity, apps.web_identity, apps.kiosk.identity])


@needs_chromium
def test_the_linked_apps_hold_one_conversation_in_the_order_sent(
        box: Appliance, linked: Apps, page: Page) -> None:
    conversation = f"person-{person_of(box, linked.wecom.identity)}"
    asked = {"wecom": "What is the capital of France?", "web": "What colour is the sky?",
             "kiosk": "How many days are in a week?"}
    open_chat(page, box, linked.web_token)
    before = len(linked.wecom.received())
    wecom_id = linked.wecom.say(asked["wecom"])  # stored once WeCom has its 200
    web_id = type_and_send(page, asked["web"])
    # the box acknowledged it (the ack may move the page to the person's conversation,
    # which clears the list and loads it afresh: the turn is missing for a moment)
    page.wait_for("document.getElementById('messages').dataset.loaded === 'true' && "
                  f"document.querySelector('#messages li.turn[data-id=\"{web_id}\"]')"
                  "?.dataset.seq")
    kiosk_id = linked.kiosk.send(asked["kiosk"])
    assert linked.kiosk.ack(kiosk_id)["conversation"] == conversation

    on_page = answer_shown(page, web_id)
    kiosk_reply = linked.kiosk.reply(kiosk_id)
    until(lambda: len(linked.wecom.received()) > before, "the WeCom answer", ANSWER_S)
    stored = history(box, linked.web_token, conversation)
    assert [(m["id"], m["text"]) for m in stored] == [
        (wecom_id, asked["wecom"]), (web_id, asked["web"]), (kiosk_id, asked["kiosk"])]
    assert [m["seq"] for m in stored] == sorted(m["seq"] for m in stored)
    assert [m["channel"] for m in stored] == ["im", "ws", "mqtt"]
    assert all(m["reply"] for m in stored), stored
    assert linked.wecom.received()[before:] == [stored[0]["reply"]]
    assert on_page["state"] == "done" and on_page["text"] == stored[1]["reply"]
    assert kiosk_reply["text"] == stored[2]["reply"]
    # answered strictly in the order sent
    answered = [next(t["at"] for t in shown(box, m["id"])[0]["transitions"]
                     if t["state"] == "answered") for m in stored]
    assert answered == sorted(answered)
    assert [found["message"]["conversation"] for found in shown(box, kiosk_id)] == \
        [conversation]
    # and the web chat shows the whole conversation, in order, each question once
    page.reload()
    page.wait_for("document.getElementById('messages').dataset.loaded === 'true' && "
                  "document.querySelectorAll('#messages li.turn').length === 3")
    assert turns_shown(page) == [[asked["wecom"], "done"], [asked["web"], "done"],
                                 [asked["kiosk"], "done"]]


# -- replies: to the asking app, once to each following app, nowhere else ---------------------

def test_a_reply_goes_once_to_the_asking_app_and_once_to_each_following_app_only(
        box: Appliance, linked: Apps) -> None:
    assert linked.wecom.ask("/follow").startswith("Following:")
    assert linked.kiosk.ask("/follow").startswith("Following:")
    wecom_before = len(linked.wecom.received())

    # the web chat (not following) asks: its answer there, and a copy on each follower
    web_id = linked.web.send("What is the capital of Italy?")
    web_answer = linked.web.reply(web_id)["text"]
    until(lambda: web_id in linked.kiosk.replies(), "the device's copy", ANSWER_S)
    until(lambda: len(linked.wecom.received()) > wecom_before, "WeCom's copy", ANSWER_S)
    # WeCom asks: its answer there, a copy on the device, none on the web chat
    wecom_answer = linked.wecom.ask("What is the capital of Spain?")
    wecom_id = linked.wecom.last
    until(lambda: wecom_id in linked.kiosk.replies(), "the device's copy", ANSWER_S)
    # the device asks: its answer there, a copy on WeCom, none on the web chat
    kiosk_id = linked.kiosk.send("What is the capital of Germany?")
    kiosk_answer = linked.kiosk.reply(kiosk_id)["text"]
    until(lambda: len(linked.wecom.received()) > wecom_before + 2, "WeCom's copy", ANSWER_S)
    settle()

    assert linked.wecom.received()[wecom_before:] == [web_answer, wecom_answer, kiosk_answer]
    assert linked.kiosk.replies().count(web_id) == 1
    assert linked.kiosk.replies().count(wecom_id) == 1
    assert linked.kiosk.replies().count(kiosk_id) == 1
    assert linked.web.replies().count(web_id) == 1
    assert wecom_id not in linked.web.replies() and kiosk_id not in linked.web.replies()


def test_a_following_web_chat_gets_each_answer_given_elsewhere_once(
        box: Appliance, linked: Apps) -> None:
    assert linked.web.ask("/follow").startswith("Following:")
    first = linked.web.send("What is two plus two?")  # the web chat now watches the person's
    linked.web.reply(first)
    conversation = linked.web.ack(first)["conversation"]
    kiosk_id = linked.kiosk.send("What is the capital of Japan?")
    kiosk_answer = linked.kiosk.reply(kiosk_id)["text"]
    assert linked.web.reply(kiosk_id)["text"] == kiosk_answer
    before = len(linked.wecom.received())
    linked.wecom.ask("What is the capital of Egypt?")
    wecom_id = linked.wecom.last
    assert linked.web.reply(wecom_id)["conversation"] == conversation
    settle()
    assert linked.web.replies().count(kiosk_id) == 1
    assert linked.web.replies().count(wecom_id) == 1
    assert len(linked.wecom.received()) == before + 1  # WeCom does not follow
    assert wecom_id not in linked.kiosk.replies()      # nor does the device


def test_unfollow_stops_the_copies(box: Appliance, linked: Apps) -> None:
    assert linked.wecom.ask("/follow").startswith("Following:")
    assert linked.wecom.ask("/unfollow").startswith("No longer following:")
    before = len(linked.wecom.received())
    kiosk_id = linked.kiosk.send("What is the capital of Portugal?")
    linked.kiosk.reply(kiosk_id)
    settle()
    assert linked.wecom.received()[before:] == []


def test_follow_before_linking_asks_to_link_first(apps: Apps) -> None:
    assert apps.wecom.ask("/follow") == ("Link this app first: send /link on the app you "
                                         "already use.")
    assert apps.kiosk.ask("/follow") == ("Link this app first: send /link on the app you "
                                         "already use.")


def test_a_retried_wecom_message_is_answered_once_on_every_app(
        box: Appliance, linked: Apps) -> None:
    assert linked.kiosk.ask("/follow").startswith("Following:")
    before = len(linked.wecom.received())
    msg_id = next(MSG_IDS)
    message_id = linked.wecom.say("What is the capital of Norway?", msg_id)
    for _ in range(3):  # WeCom tries again (within 5 s each) when the box seems slow
        linked.wecom.say("What is the capital of Norway?", msg_id)
    until(lambda: len(linked.wecom.received()) > before, "the WeCom answer", ANSWER_S)
    until(lambda: message_id in linked.kiosk.replies(), "the device's copy", ANSWER_S)
    linked.wecom.say("What is the capital of Norway?", msg_id)  # and once it was answered
    settle()
    assert len(linked.wecom.received()) == before + 1
    assert linked.kiosk.replies().count(message_id) == 1
    [stored] = shown(box, message_id)
    assert stored["message"]["conversation"] == \
        f"person-{person_of(box, linked.wecom.identity)}"


# -- refusals ---------------------------------------------------------------------------------

def test_a_used_code_is_refused_with_a_clear_reply(apps: Apps) -> None:
    code = code_from(apps.wecom.ask("/link"))
    assert apps.web.ask(f"/link {code}").startswith("Linked:")
    assert apps.kiosk.ask(f"/link {code}") == REFUSED
    message_id = apps.kiosk.send("Hello")  # still on its own
    assert apps.kiosk.ack(message_id)["conversation"] == apps.kiosk.id


def test_a_wrong_code_is_refused_and_the_right_one_still_links(apps: Apps) -> None:
    code = code_from(apps.wecom.ask("/link"))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert apps.web.ask(f"/link {wrong}") == REFUSED
    assert apps.web.ask("/link not-a-code") == REFUSED
    assert apps.web.ask(f"/link {code}").startswith("Linked:")


def test_an_app_linked_to_someone_else_is_refused_and_told_how_to_free_it(
        box: Appliance, apps: Apps, api: WeComApi) -> None:
    assert apps.web.ask(f"/link {code_from(apps.wecom.ask('/link'))}").startswith("Linked:")
    stranger = WeComUser(box, api)
    reply = apps.web.ask(f"/link {code_from(stranger.ask('/link'))}")
    assert reply.startswith("Not linked: this account is linked to someone already"), reply
    assert "appliance people unlink" in reply, reply
    assert person_of(box, apps.web_identity) == person_of(box, apps.wecom.identity)


# -- the operator's verbs ---------------------------------------------------------------------

def test_people_unlink_separates_them_again(box: Appliance, linked: Apps) -> None:
    person = person_of(box, linked.wecom.identity)
    done = cli(box, "people", "unlink", linked.kiosk.identity)
    assert done.returncode == 0, done.stderr
    assert f"unlinked {linked.kiosk.identity}" in done.stdout
    assert sorted(i["identity"] for i in people(box)[str(person)]) == sorted(
        [linked.wecom.identity, linked.web_identity])
    kiosk_id = linked.kiosk.send("Hello again")
    assert linked.kiosk.ack(kiosk_id)["conversation"] == linked.kiosk.id
    linked.kiosk.reply(kiosk_id)
    web_id = linked.web.send("Hello from the web")
    assert linked.web.ack(web_id)["conversation"] == f"person-{person}"
    assert kiosk_id not in [m["id"] for m in history(box, linked.web_token, f"person-{person}")]
    again = cli(box, "people", "unlink", linked.kiosk.identity)
    assert again.returncode == 2 and "is not linked to anyone" in again.stderr


def test_people_link_from_the_cli_puts_the_apps_in_one_conversation(
        box: Appliance, apps: Apps) -> None:
    done = cli(box, "people", "link", apps.wecom.identity, apps.web_identity,
               apps.kiosk.identity)
    assert done.returncode == 0, done.stderr
    found = re.search(r"linked 3 identities as person (\w+) \(conversation person-\1\)",
                      done.stdout)
    assert found, done.stdout
    conversation = f"person-{found.group(1)}"
    apps.wecom.ask("/help")
    web_id = apps.web.send("/status")
    assert apps.web.ack(web_id)["conversation"] == conversation
    apps.web.reply(web_id)
    kiosk_id = apps.kiosk.send("/help")
    assert apps.kiosk.ack(kiosk_id)["conversation"] == conversation
    apps.kiosk.reply(kiosk_id)
    stored = history(box, apps.web_token, conversation)
    assert [m["channel"] for m in stored] == ["im", "ws", "mqtt"]
    assert [m["id"] for m in stored][1:] == [web_id, kiosk_id]
    assert apps.wecom.ask("/follow").startswith("Following:")  # linked as /link would have


def test_people_link_needs_two_identities(box: Appliance) -> None:
    done = cli(box, "people", "link", f"user:lonely-{secrets.token_hex(4)}")
    assert done.returncode == 2 and "at least two identities" in done.stderr
    done = cli(box, "people", "link", "user:a", "no-colon")
    assert done.returncode == 2 and "is not an identity" in done.stderr
