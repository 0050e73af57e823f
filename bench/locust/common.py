"""What the gate's locustfiles share: their options, the box's address and credentials, the
one way a measured request reaches locust's statistics, and the decode speeds of the streams,
written for the gate when locust quits.

Imported only inside a locust process (importing locust patches the standard library for
gevent). Tokens come from the environment (``APPLIANCE_GATE_TOKENS``, one per line), never
from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from locust import User, between, events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from bench.locust.identities import read_tokens

logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per request

TOKENS_ENV = "APPLIANCE_GATE_TOKENS"
CHAT_PATH = "/v1/chat/completions"
# Questions the default model answers in a sentence: the pipeline channels (WebSocket, MQTT)
# cannot cap an answer's length, so their latency is the model's own (some innocent questions
# make it ramble for 2,000 characters).
PROMPTS = (
    "What is the capital of France?",
    "What is the capital of Italy?",
    "What is the capital of Japan?",
    "How many days are in a week?",
    "Give one word that rhymes with 'cat'.",
    "What is the largest ocean on Earth?",
    "Say hello in one short sentence.",
)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("appliance gate")
    group.add_argument("--gate-ca", default="", help="CA file for the box's TLS certificate.")
    group.add_argument("--gate-mqtt", default="", help="MQTT broker HOST:PORT "
                       "(default: the target's host, port 1883).")
    group.add_argument("--gate-max-tokens", type=int, default=64,
                       help="Completion tokens per HTTP chat request (EOS ignored).")
    group.add_argument("--gate-timeout", type=float, default=60.0,
                       help="Seconds one request may take before it counts as failed.")
    group.add_argument("--gate-out", default="", help="Directory for the final statistics "
                       "(stats.csv, failures.csv, exceptions.csv, decode.json), written at quit.")


@dataclass(frozen=True)
class Box:
    """The target as every user sees it."""

    base_url: str
    tls: bool
    ca_file: str
    tokens: tuple[str, ...]
    mqtt_host: str
    mqtt_port: int
    max_tokens: int
    timeout_s: float

    @property
    def token(self) -> str | None:
        return self.tokens[0] if self.tokens else None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)


@cache
def box(environment: Environment) -> Box:
    options = environment.parsed_options
    if options is None:
        raise RuntimeError("the gate's options are parsed before any user starts")
    base_url = (environment.host or "").rstrip("/")
    parts = urlsplit(base_url)
    mqtt_host, _, mqtt_port = (options.gate_mqtt or f"{parts.hostname}:1883").rpartition(":")
    return Box(base_url=base_url, tls=parts.scheme == "https", ca_file=options.gate_ca,
               tokens=tuple(read_tokens(os.environ.get(TOKENS_ENV, ""))),
               mqtt_host=mqtt_host.strip("[]"), mqtt_port=int(mqtt_port),
               max_tokens=options.gate_max_tokens, timeout_s=options.gate_timeout)


class GateError(Exception):
    """A request the box answered wrongly (status, error event, missing reply)."""


def http_client(target: Box) -> httpx.Client:
    return httpx.Client(base_url=target.base_url, headers=target.headers,
                        verify=target.ssl_context() if target.tls else True,
                        timeout=target.timeout_s)


_served_model: list[str] = []


def served_model(client: httpx.Client) -> str:
    """The model the box serves (``GET /v1/models``), asked once per run."""
    if not _served_model:
        response = client.get("/v1/models")
        if response.status_code != 200:
            raise refused(response)
        _served_model.append(response.json()["data"][0]["id"])
    return _served_model[0]


def chat_body(target: Box, model: str, prompt: str, stream: bool) -> dict[str, Any]:
    """A fixed amount of work per request (EOS ignored), so runs compare."""
    body: dict[str, Any] = {"model": model, "max_tokens": target.max_tokens,
                            "ignore_eos": True,
                            "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def refused(response: httpx.Response) -> GateError:
    """The error of a non-200 answer, as locust's failure table shows it."""
    try:
        detail = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200]
    return GateError(f"HTTP {response.status_code}: {detail}")


@dataclass
class Sample:
    length: int = 0


class ChatUser(User):
    """A person or device chatting: a question, its answer, a short pause."""

    abstract = True
    wait_time = between(0.2, 1.0)

    @property
    def box(self) -> Box:
        return box(self.environment)

    @staticmethod
    def prompt() -> str:
        return random.choice(PROMPTS)

    def report(self, kind: str, name: str, started: float, length: int = 0,
               error: BaseException | None = None) -> None:
        """One request in locust's statistics, timed from ``started`` (perf_counter)."""
        self.environment.events.request.fire(
            request_type=kind, name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=error, context={})

    @contextmanager
    def measure(self, kind: str, name: str) -> Iterator[Sample]:
        """Time the block as one request; any exception in it is that request's failure (a
        stopped user's GreenletExit is not an Exception, so it is not counted)."""
        sample = Sample()
        started = time.perf_counter()
        try:
            yield sample
        except Exception as exc:
            self.report(kind, name, started, sample.length, exc)
        else:
            self.report(kind, name, started, sample.length)


class HttpChatUserBase(ChatUser):
    """A chat user with one HTTP client for its whole life (kept-alive, TLS as the box's)."""

    abstract = True

    def on_start(self) -> None:
        self.client = http_client(self.box)

    def on_stop(self) -> None:
        self.client.close()


@dataclass
class DecodeSpeeds:
    """Per-stream decode speeds and completion tokens, for the gate's tokens/s objective."""

    per_stream: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    started: float = field(default_factory=time.time)

    def add_completion(self, tokens: int) -> None:
        self.completion_tokens += tokens

    def add_stream(self, tokens: int, first: float, last: float) -> None:
        """A stream of ``tokens`` whose first and last token arrived at ``first``, ``last``."""
        self.completion_tokens += tokens
        if tokens > 1 and last > first:
            self.per_stream.append((tokens - 1) / (last - first))

    def to_json(self) -> dict[str, Any]:
        return {"stream_tokens_per_s": self.per_stream,
                "completion_tokens": self.completion_tokens,
                "seconds": time.time() - self.started}


decode_speeds = DecodeSpeeds()


@events.test_start.add_listener
def _started(environment: Environment, **kwargs: Any) -> None:
    decode_speeds.started = time.time()


@events.quitting.add_listener
def _write_results(environment: Environment, **kwargs: Any) -> None:
    """The final figures, once every user has stopped. Locust's own ``--csv`` files are
    written once a second and miss the requests that end in the last second, so the gate
    reads these instead (same columns)."""
    out = getattr(environment.parsed_options, "gate_out", "")
    if not out:
        return
    formatter = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for name, write in (("stats.csv", formatter.requests_csv),
                        ("failures.csv", formatter.failures_csv),
                        ("exceptions.csv", formatter.exceptions_csv)):
        with (Path(out) / name).open("w", newline="") as file:
            write(csv.writer(file))
    (Path(out) / "decode.json").write_text(json.dumps(decode_speeds.to_json()))
