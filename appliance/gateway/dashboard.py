"""``GET /dashboard``: the ops page (charts, events, restarts, benchmarks) and its Knowledge
tab (upload, list, remove and search documents), for admins.

A browser cannot put a bearer header on a navigation, so the page takes its admin token from
``?access_token=``; its script then moves the token from the address bar into the
``Authorization`` header of its calls to ``/v1/ops/*`` and ``/v1/kb/*``. The script and
style sheet come from this package (no CDN: boxes are often offline) and hold no data, so
they need no token; a strict Content-Security-Policy lets the page load nothing else and talk
to nothing else.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from appliance.gateway.auth import CHALLENGE, peer, require
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.security.tokens import AuthError, Claims

router = APIRouter()

ASSETS = {"dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the page's URL
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@cache
def static_file(name: str) -> bytes:
    """A file of the package's static/ folder (the pages' HTML, scripts and style sheets)."""
    return (resources.files("appliance.gateway") / "static" / name).read_bytes()


async def _admin(request: Request) -> Claims | None:
    """The admin check of ``require("admin")``, also accepting the token from the URL."""
    token = request.query_params.get("access_token")
    access = gateway_state(request).access
    if token is None or access is None:
        return await require("admin")(request)
    try:
        return access.check(token, "admin", channel="http /dashboard", peer=peer(request))
    except AuthError as exc:
        challenge = CHALLENGE if exc.status == 401 else \
            f'{CHALLENGE}, error="insufficient_scope", scope="admin"'
        raise APIError(exc.status, str(exc), code=exc.reason,
                       headers={"WWW-Authenticate": challenge, **HEADERS}) from None


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> Response:
    await _admin(request)
    return HTMLResponse(static_file("dashboard.html"), headers=HEADERS)


@router.get("/dashboard/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise APIError(404, f"No such endpoint: GET /dashboard/{name}")
    return Response(static_file(name), media_type=ASSETS[name], headers=HEADERS)
