"""Refuse oversized requests before anything parses them: bodies with 413, header blocks
(an oversized token, a cookie bomb) with 431."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.gateway.errors import error_body


class BodyTooLarge(Exception):
    pass


# A path with a larger limit of its own: (bytes, the 413's message, its code).
Larger = Mapping[str, tuple[int, str, str]]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_header_bytes: int = 16_384,
                 larger: Larger | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
        if header_bytes > self.max_header_bytes:
            if scope["type"] == "websocket":  # refused handshake (HTTP 403), before accept
                await send({"type": "websocket.close", "code": 1009,
                            "reason": "request headers too large"})
                return
            await self._send(send, 431, f"Request headers take {header_bytes} bytes; the limit "
                             f"is {self.max_header_bytes}", "headers_too_large")
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        limit, message, code = self.larger.get(scope.get("path", ""), (
            self.max_bytes, f"Request body larger than {self.max_bytes} bytes",
            "request_too_large"))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._send(send, 413, message, code)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._send(send, 413, message, code)

    @staticmethod
    async def _send(send: Send, status: int, message: str, code: str) -> None:
        body = json.dumps(error_body(message, "invalid_request_error", code=code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
