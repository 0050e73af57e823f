"""Locustfile: ``POST /v1/chat/completions`` with ``stream: true`` (server-sent events).

Three figures per stream: the whole stream (type ``stream``, until ``data: [DONE]``), the time
to its first token (type ``ttft``, same name), and its decode speed, (tokens - 1) / (last
token - first token), collected for the gate's ``min_tokens_per_s``.
"""

from __future__ import annotations

import json
import time

from locust import task

from bench.locust.common import (
    CHAT_PATH,
    GateError,
    HttpChatUserBase,
    chat_body,
    decode_speeds,
    refused,
)
from bench.locust.common import served_model as model_of


class StreamChatUser(HttpChatUserBase):
    """A chat window showing the answer as it is written."""

    @task
    def chat(self) -> None:
        with self.measure("stream", CHAT_PATH) as sample:
            body = chat_body(self.box, model_of(self.client), self.prompt(), stream=True)
            started = time.perf_counter()
            with self.client.stream("POST", CHAT_PATH, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise refused(response)
                first = last = 0.0
                tokens = 0
                for line in response.iter_lines():
                    sample.length += len(line) + 1
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        break
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise GateError(f"error event: {event['error'].get('message')}")
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
                    if any(choice["delta"].get("content") for choice in event["choices"]):
                        last = time.perf_counter()
                        if not first:
                            first = last
                            self.report("ttft", CHAT_PATH, started)
                else:
                    raise GateError("the stream ended without data: [DONE]")
            if not first:
                raise GateError("the stream sent no token")
            decode_speeds.add_stream(tokens, first, last)
