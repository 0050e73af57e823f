"""Locustfile: ``POST /v1/chat/completions`` answered whole (request type ``http``)."""

from __future__ import annotations

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


class HttpChatUser(HttpChatUserBase):
    """An app calling the OpenAI-compatible API without streaming."""

    @task
    def chat(self) -> None:
        with self.measure("http", CHAT_PATH) as sample:
            body = chat_body(self.box, model_of(self.client), self.prompt(), stream=False)
            response = self.client.post(CHAT_PATH, json=body)
            sample.length = len(response.content)
            if response.status_code != 200:
                raise refused(response)
            answer = response.json()
            if not answer["choices"][0]["message"]["content"]:
                raise GateError("empty answer")
            decode_speeds.add_completion(answer["usage"]["completion_tokens"])
