"""One error shape for every HTTP error: OpenAI's ``{"error": {message, type, param, code}}``.

Inner layers raise :class:`APIError`; the handlers here are the only place that turns errors
into responses, so validation problems, unknown routes and engine outages all look alike to a
client, and none of them is a bare 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.router.admission import (
    ConversationForbidden,
    EmptyText,
    ForbiddenSender,
    Refused,
    TextTooLong,
)
from appliance.router.drain import Draining

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, retry_after: int | None = None,
                 error_type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.error_type = error_type or _TYPES.get(status, "api_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(message: str, error_type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


REFUSAL_STATUS: dict[type[Refused], int] = {
    EmptyText: 400, TextTooLong: 413, ConversationForbidden: 403, ForbiddenSender: 403,
    Draining: 503}


def refusal_error(refused: Refused) -> APIError:
    """The HTTP face of the pipeline's refusals (appliance/router/admission.py)."""
    status = next((code for kind, code in REFUSAL_STATUS.items() if isinstance(refused, kind)),
                  400)
    return APIError(status, str(refused), param=refused.param, code=refused.code,
                    retry_after=refused.retry_after)


def error_response(exc: APIError) -> JSONResponse:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers or None)


def _param(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if part == "body":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def validation_to_api_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    param = _param(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return APIError(400, f"The request body is not valid JSON: {detail}", code="invalid_json")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if kind == "missing" and not param:
        return APIError(400, "The request body is empty; send a JSON object", code="missing_body")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: '{param}'", param=param,
                        code="missing_required_parameter")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not param:  # the body as a whole, e.g. a JSON list where an object belongs
        return APIError(400, f"Invalid request body: {message}", code="invalid_value")
    return APIError(400, f"Invalid value for '{param}': {message}", param=param,
                    code="invalid_value")


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_to_api_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return error_response(APIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "Internal error; the gateway keeps running",
                                       error_type="api_error", code="internal_error"))
