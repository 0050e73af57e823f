"""The IM fault test of issue 16: "3 platforms x 100 messages with the gateway killed
mid-run: every message answered exactly once on its platform, in order per conversation".

One appliance with a Telegram, a Slack and a Feishu integration, each platform's API a fake
on loopback (``telegram_platform``, ``slack_platform``, ``feishu_platform``). Per platform,
five chats write twenty messages each, pushed the way the platform pushes them (Telegram's
secret-token header, Slack's v0 signature made anew for each delivery, Feishu's encrypted
and signed events) and pushed again with the same update / event id when a push is refused,
fails or times out, as the platforms retry; while they write, the gateway gets a SIGKILL (the
supervisor restarts it). Then each message must have exactly one answer on its platform,
and each chat its answers in the order its messages were sent.

Most messages are unknown slash commands (``/tg2m07``), answered at once and quoting the
command, so each answer names its message; one message per chat goes to the model, so the
fast answers behind it in its conversation must wait for it. Telegram's and Feishu's replies
also name the message they answer (``reply_parameters.message_id``, ``messages/:id/reply``);
Slack's, in a direct message, only by their text, so the model's answer there is known by
its place among the others.

One copy too many is allowed, and reported: README's "one window left". The single outbox
worker may have handed a part to Telegram or Slack just before the kill, not yet marked sent;
the new gateway sends it again, and neither platform can drop a resend (no idempotency key for
bots). Feishu drops it by the part's ``uuid``, so there it is not allowed. Anything else, a
second answer to another message, or a third, fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any, ClassVar

import httpx
import pytest

from tests.conftest import Appliance
from tests.gateway.im import feishu_platform, slack_platform, telegram_platform
from tests.gateway.im.fake_platform import FakePlatform
from tests.polling import reached, until

pytestmark = pytest.mark.e2e
CHATS = 5
PER_CHAT = 20
TO_THE_MODEL = 6          # each chat's message 6 goes to the model: still owed at the kill
KILL_AT = 0.4             # the gateway is killed once this share of pushes was acknowledged
PACE_S = 0.03             # between two messages a platform pushes
RETRY_EVERY_S = 0.25      # between two pushes of a message that was not acknowledged
PUSH_GIVE_UP_S = 60.0     # how long a platform keeps pushing one message
ANSWERS_S = 300.0         # for 300 answers (15 from the model) on a busy two-core box
QUOTED = re.compile(r"^Unknown command /(\w+)\.")
MODEL_ANSWER = "(the model's answer)"
NO_IDEMPOTENCY = ("telegram", "slack")  # a resent reply is a second message there
OLD_GATEWAY_S = 0.5       # a request the killed gateway wrote reaches the fake within this


@dataclass
class Message:
    chat: str
    tag: str            # what its answer quotes (or, for the model's question, its place)
    text: str
    body: dict[str, Any]  # what the platform pushes, the same in every retry
    pushes: int = 0
    acknowledged: bool = False


@dataclass(frozen=True)
class Reply:
    answers: str   # the tag of the message it answers
    at: float      # when it reached the platform (time.monotonic)


@dataclass(frozen=True)
class Resent:
    """The part the killed gateway had handed over, sent again by the new one."""

    kind: str
    chat: str
    copy: Reply


@dataclass
class Platform(ABC):
    """One platform's side of the run: its fake API, its chats, what it pushes and how."""

    kind: ClassVar[str]
    fake: FakePlatform
    name: str
    ids: Iterator[int] = field(default_factory=lambda: count(1))
    messages: list[Message] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)   # pushes given up
    refused_pushes: int = 0                             # pushes not acknowledged, retried

    @abstractmethod
    def chats(self) -> list[str]: ...

    @abstractmethod
    def build(self, chat: str, tag: str, text: str) -> dict[str, Any]:
        """The update / event carrying ``text`` in ``chat``."""

    @abstractmethod
    def push_once(self, box: Appliance, message: Message) -> httpx.Response: ...

    @abstractmethod
    def replies(self) -> dict[str, list[Reply]]:
        """Per chat, the replies posted on the platform, in the order posted."""

    def answers(self) -> dict[str, list[str]]:
        """Per chat, what each reply posted on the platform answers, in the order posted."""
        return {chat: [r.answers for r in replies] for chat, replies in self.replies().items()}

    def conversation(self, chat: str) -> str:
        return f"{self.kind}-{self.name}-{chat}"

    def gives_up(self, response: httpx.Response) -> bool:
        """Whether the platform stops retrying after this answer (besides a 2xx)."""
        return False

    def plan(self, prefix: str) -> None:
        for n in range(PER_CHAT):
            for c, chat in enumerate(self.chats()):
                tag = f"{prefix}{c}m{n:02d}"
                text = "Say hello." if n == TO_THE_MODEL else f"/{tag}"
                self.messages.append(Message(chat, tag, text, self.build(chat, tag, text)))

    def push(self, box: Appliance, message: Message) -> None:
        """Push until acknowledged, as the platform retries, for at most PUSH_GIVE_UP_S."""
        deadline = time.monotonic() + PUSH_GIVE_UP_S
        last = ""
        while time.monotonic() < deadline:
            message.pushes += 1
            try:
                response = self.push_once(box, message)
                if response.is_success:
                    message.acknowledged = True
                    return
                last = f"HTTP {response.status_code} {response.text[:200]}"
                if self.gives_up(response):
                    message.acknowledged = True  # as the platform sees it
                    return
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            self.refused_pushes += 1
            time.sleep(RETRY_EVERY_S)
        self.failures.append(f"{self.kind} {message.tag}: not acknowledged in "
                             f"{PUSH_GIVE_UP_S:g} s ({message.pushes} pushes; last: {last})")

    def run(self, box: Appliance, stop: threading.Event) -> None:
        for message in self.messages:
            if stop.is_set():
                return
            self.push(box, message)
            time.sleep(PACE_S)

    def acknowledged(self) -> int:
        return sum(m.acknowledged for m in self.messages)

    def expected(self) -> dict[str, list[str]]:
        """Per chat, the tags of its messages in the order they were sent."""
        order: dict[str, list[str]] = {chat: [] for chat in self.chats()}
        for message in self.messages:
            order[message.chat].append(message.tag)
        return order

    @staticmethod
    def label(field_tag: str, text: str) -> str:
        """What a reply answers: the message its platform field names, checked against the
        command its text quotes (a disagreement shows as both)."""
        quoted = QUOTED.match(text)
        if quoted is None or quoted.group(1) == field_tag:
            return field_tag
        return f"{field_tag}(quoting {quoted.group(1)})"


@dataclass
class Telegram(Platform):
    kind: ClassVar[str] = "telegram"

    def chats(self) -> list[str]:
        return [str(7_000_001 + c) for c in range(CHATS)]

    def build(self, chat: str, tag: str, text: str) -> dict[str, Any]:
        message_id = 100 + int(tag[-2:])
        return telegram_platform.update(next(self.ids), int(chat), message_id, text)

    def push_once(self, box: Appliance, message: Message) -> httpx.Response:
        return telegram_platform.deliver(box, message.body, name=self.name, timeout=10)

    def replies(self) -> dict[str, list[Reply]]:
        answered: dict[str, list[Reply]] = {chat: [] for chat in self.chats()}
        for call in self.fake.to("/sendMessage"):
            body = call.json()
            c = self.chats().index(body["chat_id"])
            number = body["reply_parameters"]["message_id"] - 100
            answered[body["chat_id"]].append(
                Reply(self.label(f"tg{c}m{number:02d}", body["text"]), call.at))
        return answered


@dataclass
class Slack(Platform):
    kind: ClassVar[str] = "slack"

    def chats(self) -> list[str]:
        return [f"D0FAULT0{c}" for c in range(CHATS)]  # direct messages: one conversation each

    def build(self, chat: str, tag: str, text: str) -> dict[str, Any]:
        return slack_platform.callback(slack_platform.message(chat, text),
                                       event_id=f"Ev0{tag.upper()}")

    def push_once(self, box: Appliance, message: Message) -> httpx.Response:
        # Slack waits 3 s; each retry is signed when sent and says which one it is.
        retry = {"X-Slack-Retry-Num": str(message.pushes - 1),
                 "X-Slack-Retry-Reason": "http_error"} if message.pushes > 1 else {}
        return slack_platform.send(box, message.body, name=self.name, headers=retry,
                                   timeout=3)

    def gives_up(self, response: httpx.Response) -> bool:
        return response.headers.get("x-slack-no-retry") == "1"

    def replies(self) -> dict[str, list[Reply]]:
        answered: dict[str, list[Reply]] = {chat: [] for chat in self.chats()}
        for call in self.fake.to("/chat.postMessage"):
            body = call.json()
            quoted = QUOTED.match(body["text"])
            answered[body["channel"]].append(
                Reply(quoted.group(1) if quoted else MODEL_ANSWER, call.at))
        return answered

    def expected(self) -> dict[str, list[str]]:
        return {chat: [MODEL_ANSWER if tag.endswith(f"m{TO_THE_MODEL:02d}") else tag
                       for tag in tags] for chat, tags in super().expected().items()}


@dataclass
class Feishu(Platform):
    api: feishu_platform.OpenPlatform = field(default_factory=feishu_platform.OpenPlatform)
    kind: ClassVar[str] = "feishu"

    def chats(self) -> list[str]:
        return [f"oc_fault{c}" for c in range(CHATS)]

    def build(self, chat: str, tag: str, text: str) -> dict[str, Any]:
        return feishu_platform.receive(text, chat, event_id=f"ev-{tag}-{os.urandom(8).hex()}",
                                       message_id=f"om_{tag}x{os.urandom(8).hex()}")

    def push_once(self, box: Appliance, message: Message) -> httpx.Response:
        return feishu_platform.push(box, message.body, timeout=3)  # Feishu waits 3 s

    def replies(self) -> dict[str, list[Reply]]:
        # What Feishu posted: a resent part with a uuid already used posts nothing.
        chat_of = {m.body["event"]["message"]["message_id"]: m.chat for m in self.messages}
        answered: dict[str, list[Reply]] = {chat: [] for chat in self.chats()}
        with self.api.lock:
            posted = list(self.api.posted)
        for call, data in posted:
            parent = data["parent_id"]
            tag = parent[3:].partition("x")[0]
            text = json.loads(data["body"]["content"])["text"]
            answered[chat_of[parent]].append(Reply(self.label(tag, text), call.at))
        return answered


@pytest.fixture(scope="module")
def platforms() -> Iterator[list[Platform]]:
    feishu_api = feishu_platform.OpenPlatform()
    made: list[Platform] = [
        Telegram(FakePlatform(telegram_platform.BotApi()).up(), "desk"),
        Slack(FakePlatform(slack_platform.WebApi()).up(), "team"),
        Feishu(FakePlatform(feishu_api).up(), feishu_platform.NAME, api=feishu_api)]
    yield made
    for platform in made:
        platform.fake.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], platforms: list[Platform],
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    telegram, slack, feishu = platforms
    box = start_module_appliance(
        APPLIANCE_IM__TELEGRAM_API_BASE=telegram.fake.base_url,
        APPLIANCE_IM__SLACK_API_BASE=f"{slack.fake.base_url}/api",
        APPLIANCE_IM__FEISHU_API_BASE=feishu.fake.base_url,
        APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2", APPLIANCE_OUTBOX__RETRY_MAX_S="1",
        APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS="16")
    files = tmp_path_factory.mktemp("im-faults")
    telegram_platform.add_integration(box, files, telegram.name)
    slack_platform.add_integration(box, files, slack.name)
    feishu_platform.add_integration(box, files, feishu.name)
    return box


def _ready(box: Appliance) -> bool:
    try:
        return httpx.get(f"{box.base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _gateway_pid(box: Appliance) -> int | None:
    try:
        return box.gateway_pid()
    except (OSError, ValueError):  # between two gateways
        return None


def _all_delivered(box: Appliance, platforms: list[Platform]) -> bool:
    """Every message stored, answered and handed to its platform (nothing left to send)."""
    try:
        for platform in platforms:
            for chat in platform.chats():
                listed = httpx.get(f"{box.base_url}/v1/conversations/"
                                   f"{platform.conversation(chat)}/messages", timeout=10)
                messages = listed.json().get("messages", []) if listed.is_success else []
                if len(messages) < PER_CHAT or any(m["state"] != "delivered"
                                                   for m in messages):
                    return False
    except httpx.HTTPError:
        return False
    return True


def _all_answered(platforms: list[Platform]) -> bool:
    for platform in platforms:
        answered = platform.answers()
        for chat, tags in platform.expected().items():
            if not set(tags) <= set(answered[chat]):
                return False
    return True


def _in_flight_resent(platforms: list[Platform], killed: float) -> Resent | None:
    """The second copy of the last reply the killed gateway sent, if the new gateway sent it
    again on a platform that cannot drop a resend (README: the one window left)."""
    before = [(reply, platform, chat) for platform in platforms
              for chat, replies in platform.replies().items()
              for reply in replies if reply.at <= killed + OLD_GATEWAY_S]
    if not before:
        return None
    last, platform, chat = max(before, key=lambda entry: entry[0].at)
    copies = [r for r in platform.replies()[chat] if r.answers == last.answers]
    if platform.kind not in NO_IDEMPOTENCY or len(copies) != 2 or copies[0] != last or \
            copies[1].at <= killed + OLD_GATEWAY_S:
        return None
    return Resent(platform.kind, chat, copies[1])


def _problems(platform: Platform, killed: float, resent: Resent | None) -> list[str]:
    """Each chat's unanswered, twice-answered, unexpected and out-of-order answers."""
    found: list[str] = []
    replies = platform.replies()
    if resent is not None and resent.kind == platform.kind:
        replies[resent.chat].remove(resent.copy)
    for chat, expected in platform.expected().items():
        seen = [r.answers for r in replies[chat]]
        counts = Counter(seen)
        where = f"{platform.kind} chat {chat} ({platform.conversation(chat)})"
        missing = [tag for tag in expected if not counts[tag]]
        twice = {tag: n for tag, n in counts.items() if n > 1}
        unexpected = [tag for tag in counts if tag not in expected]
        if missing:
            found.append(f"{where}: never answered {missing}")
        if twice:
            when = {tag: [f"{r.at - killed:+.3f} s" for r in replies[chat] if r.answers == tag]
                    for tag in twice}
            found.append(f"{where}: answered more than once {twice}, reaching the platform at "
                         f"{when} from the kill")
        if unexpected:
            found.append(f"{where}: answers to no message sent there {unexpected}")
        if not (missing or twice or unexpected) and seen != expected:
            found.append(f"{where}: out of order; sent {expected}, answered {seen}")
    return found


def test_300_messages_on_3_platforms_are_each_answered_once_in_order_across_a_gateway_kill(
        box: Appliance, platforms: list[Platform]) -> None:
    for platform, prefix in zip(platforms, ("tg", "sl", "fs"), strict=True):
        platform.plan(prefix)
    total = sum(len(p.messages) for p in platforms)
    stop = threading.Event()
    threads = [threading.Thread(target=p.run, args=(box, stop), name=f"push-{p.kind}",
                                daemon=True) for p in platforms]
    old_gateway = box.gateway_pid()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        until(lambda: sum(p.acknowledged() for p in platforms) >= KILL_AT * total,
              what=f"{KILL_AT:.0%} of the pushes acknowledged", timeout=120, interval=0.01)
        acknowledged_at_kill = sum(p.acknowledged() for p in platforms)
        answered_at_kill = sum(len(a) for p in platforms for a in p.answers().values())
        os.kill(old_gateway, signal.SIGKILL)  # mid-run: the platforms keep pushing
        killed = time.monotonic()
        until(lambda: _ready(box) and _gateway_pid(box) != old_gateway, timeout=90,
              what="the supervisor to restart the gateway", interval=0.1)
        back = time.monotonic()
        for thread in threads:
            thread.join(timeout=max(1.0, started + 300 - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=PUSH_GIVE_UP_S + 10)
    pushed = time.monotonic()
    failures = [f for p in platforms for f in p.failures]
    assert not failures, "pushes given up:\n" + "\n".join(failures)
    assert all(p.acknowledged() == len(p.messages) for p in platforms), \
        {p.kind: p.acknowledged() for p in platforms}
    # The kill caught the run in the middle: answers were owed, pushes went unanswered and
    # were pushed again.
    assert answered_at_kill < acknowledged_at_kill < total, (answered_at_kill,
                                                             acknowledged_at_kill)
    assert sum(p.refused_pushes for p in platforms) > 0

    done = reached(lambda: _all_answered(platforms) and _all_delivered(box, platforms),
                   timeout=ANSWERS_S, interval=0.5)
    answered = time.monotonic()
    time.sleep(1)  # what is sent after "delivered" would be a second answer: give it a moment
    resent = _in_flight_resent(platforms, killed)
    problems = [problem for p in platforms for problem in _problems(p, killed, resent)]
    timings = (f"pushed in {pushed - started:.0f} s, gateway back {back - killed:.1f} s after "
               f"the kill, all answered {answered - pushed:.0f} s after the last push")
    assert not problems, ("" if done else f"not all answered within {ANSWERS_S:g} s; ") + \
        timings + "\n" + "\n".join(problems) + f"\n{box.log()}"
    if resent is not None:
        warnings.warn(f"{resent.kind} chat {resent.chat}: the reply to {resent.copy.answers} "
                      "the killed gateway had just sent was sent again (no idempotency key on "
                      "that platform; README, the outbox's one window left)", stacklevel=1)
    print(f"{timings}; pushed again {sum(p.refused_pushes for p in platforms)} times; at the "
          f"kill {acknowledged_at_kill} acknowledged, {answered_at_kill} answered")
