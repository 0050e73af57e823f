"""Drain the gateway before its software is replaced (scope ``admin``).

- ``POST /v1/ops/drain``: refuse new chat work on every channel from now on; with
  ``{"wait_s": s}`` answer only once no generation is in flight, or after ``s`` seconds.
- ``GET /v1/ops/drain``: whether the gateway drains, since when, and the generations in flight.
- ``DELETE /v1/ops/drain``: take work again.

Each answers ``{"draining", "since", "in_flight", "idle"}``; the state is in memory only (see
:mod:`appliance.router.drain`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.gateway.auth import require
from appliance.gateway.state import gateway_state
from appliance.router.drain import Drain

MAX_WAIT_S = 600.0

router = APIRouter(prefix="/v1/ops", dependencies=[Depends(require("admin"))])


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait_s: float | None = Field(
        None, ge=0, le=MAX_WAIT_S, strict=True, allow_inf_nan=False,
        description="Answer only when no generation is in flight, or after this many seconds.")


def _drain(request: Request) -> Drain:
    return gateway_state(request).drain


def _answer(drain: Drain) -> dict[str, Any]:
    status = drain.status()
    return {**status, "idle": status["in_flight"] == 0}


@router.post("/drain")
async def start_drain(request: Request, body: DrainRequest | None = None) -> dict[str, Any]:
    drain = _drain(request)
    drain.set(True)
    if body is not None and body.wait_s is not None:
        await drain.wait_idle(body.wait_s)
    return _answer(drain)


@router.get("/drain")
async def drain_status(request: Request) -> dict[str, Any]:
    return _answer(_drain(request))


@router.delete("/drain")
async def stop_drain(request: Request) -> dict[str, Any]:
    drain = _drain(request)
    drain.set(False)
    return _answer(drain)
