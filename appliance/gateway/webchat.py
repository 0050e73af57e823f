"""``GET /chat``: a web chat for the branch, on the message pipeline's WebSocket.

The page signs in with a chat token (pasted, or from ``?access_token=``, which its script
removes from the address bar) or with an enrolment code (a one-time ``enroll`` token that
``POST /v1/enroll`` trades for a chat token), keeps the token in ``sessionStorage``, asks over
``/v1/ws`` (answers stream token by token, with their sources) and re-reads a conversation's
history from ``GET /v1/conversations/{c}/messages`` after a reload, resuming the socket after
the last sequence number it saw. The box has no API that lists a subject's conversations, so
the page keeps its own list in the browser's ``localStorage``.

Unlike the dashboard, the page itself needs no token: it holds no data and must be able to
show its sign-in form; every call it makes is checked as usual. Its script and style sheet
come from this package, under the dashboard's Content-Security-Policy (nothing from anywhere
else, no inline script, connections to this box only).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

from appliance.gateway.dashboard import HEADERS, static_file
from appliance.gateway.errors import APIError

router = APIRouter()

ASSETS = {"chat.js": "text/javascript; charset=utf-8",
          "chat.css": "text/css; charset=utf-8"}


@router.get("/chat", response_class=HTMLResponse)
async def chat_page() -> Response:
    return HTMLResponse(static_file("chat.html"), headers=HEADERS)


@router.get("/chat/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise APIError(404, f"No such endpoint: GET /chat/{name}")
    return Response(static_file(name), media_type=ASSETS[name], headers=HEADERS)
