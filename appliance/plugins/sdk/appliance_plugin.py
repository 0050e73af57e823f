"""The plugin side of the box's JSON-RPC, for plugin authors (standard library only).

A plugin is a program the box runs confined; it talks to the box over its standard input and
output, one JSON-RPC 2.0 message per line. This module does the talking::

    from appliance_plugin import Box, Call, run, skill

    @skill("interest")
    def interest(call: Call, box: Box) -> str:
        return f"{call.arguments['principal'] * 1.02:.2f}"

    run()

A handler returns the reply text. Through ``box`` it can use what its manifest declared and
the operator approved: ``generate`` (model tokens), ``search`` (the knowledge base),
``send`` (a message to the conversation), ``secret`` (a named secret) and ``fetch`` (a
declared host). Anything else is refused by the box and stops the call. ``print`` goes to the
box's log, never into the protocol.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

Handler = Callable[["Call", "Box"], str]
_handlers: dict[str, Handler] = {}


class BoxError(Exception):
    """The box refused or failed a request; the message says why."""


@dataclass(frozen=True)
class Call:
    skill: str
    request: str
    arguments: dict[str, Any] = field(default_factory=dict)
    conversation: str = ""
    sender: str = ""
    language: str = "en"


def skill(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _handlers[name] = handler
        return handler
    return register


class Box:
    def __init__(self, reader: TextIO, writer: TextIO) -> None:
        self._reader, self._writer = reader, writer
        self._next = 0

    def request(self, method: str, /, **params: Any) -> Any:
        self._next += 1
        ident = f"p{self._next}"
        _write(self._writer, {"jsonrpc": "2.0", "id": ident, "method": method,
                              "params": params})
        line = self._reader.readline()
        if not line:
            raise SystemExit(0)  # the box closed the channel
        reply = json.loads(line)
        if "error" in reply:
            raise BoxError(reply["error"].get("message", "refused"))
        return reply.get("result")

    def generate(self, prompt: str, max_tokens: int = 64, system: str = "") -> str:
        return str(self.request("model.generate", prompt=prompt, max_tokens=max_tokens,
                                system=system)["text"])

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        return list(self.request("kb.search", query=query, k=k)["hits"])

    def send(self, text: str) -> None:
        self.request("conversation.send", text=text)

    def secret(self, name: str) -> str:
        return str(self.request("secret.read", name=name)["value"])

    def fetch(self, url: str, method: str = "GET", headers: dict[str, str] | None = None,
              body: str | None = None) -> dict[str, Any]:
        return dict(self.request("net.fetch", url=url, method=method, headers=headers or {},
                                 body=body))


def _write(writer: TextIO, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, ensure_ascii=False) + "\n")
    writer.flush()


def run() -> None:
    """Serve the box's calls until it closes standard input."""
    reader, writer = sys.stdin, sys.stdout
    sys.stdout = sys.stderr  # print() must not write into the protocol
    box = Box(reader, writer)
    _write(writer, {"jsonrpc": "2.0", "method": "ready", "params": {"skills": sorted(_handlers)}})
    for line in reader:
        message = json.loads(line)
        ident, params = message.get("id"), message.get("params") or {}
        handler = _handlers.get(params.get("skill", ""))
        if message.get("method") != "call" or handler is None:
            _write(writer, {"jsonrpc": "2.0", "id": ident,
                            "error": {"code": -32601, "message": "no such skill here"}})
            continue
        call = Call(skill=params["skill"], request=params.get("request", ""),
                    arguments=params.get("arguments") or {},
                    conversation=params.get("conversation", ""),
                    sender=params.get("sender", ""), language=params.get("language", "en"))
        try:
            text = handler(call, box)
        except BoxError as exc:
            _write(writer, {"jsonrpc": "2.0", "id": ident,
                            "error": {"code": -32001, "message": str(exc)}})
        except Exception as exc:  # the author's bug: the person gets an error reply
            _write(writer, {"jsonrpc": "2.0", "id": ident,
                            "error": {"code": -32000,
                                      "message": f"{type(exc).__name__}: {exc}"}})
        else:
            _write(writer, {"jsonrpc": "2.0", "id": ident, "result": {"text": str(text)}})
