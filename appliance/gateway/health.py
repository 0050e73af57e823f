"""Liveness and readiness (open to probes), and metrics (the ``metrics`` scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.engine.client import EngineClient
from appliance.gateway.state import gateway_state
from appliance.router.drain import RETRY_AFTER_S

router = APIRouter()
metrics_router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is alive and its event loop turns. Says nothing of the engine."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Any:
    drain = gateway_state(request).drain
    if drain.draining:  # before the engine: a draining box takes no new work, ready or not
        return JSONResponse({"status": "not_ready", "reason": "draining", "since": drain.since,
                             "in_flight": drain.in_flight}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    client = gateway_state(request).engine
    if client.ready and client.info is not None:
        return {"status": "ready", "version": gateway_state(request).version,
                "engine": client.info.model_dump(), "load": _load(client)}
    if not client.connected:
        reason = "the engine is not connected (starting, restarting or down)"
    else:
        reason = "the engine has not answered its heartbeat"
    return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503,
                        headers={"Retry-After": "5"})


def _load(client: EngineClient) -> dict[str, Any]:
    load = client.load
    if load is None:
        return {}
    return {"active": load["active"], "waiting": load["waiting"], "capacity": load["capacity"],
            "cache_usage": load["cache_usage"], "generated_tokens": load["generated_tokens"]}


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = gateway_state(request)
    load = state.engine.load if state.engine.ready else None
    state.metrics.engine_up.set(1 if state.engine.ready else 0)
    state.metrics.queue_depth.labels("active").set(load["active"] if load else 0)
    state.metrics.queue_depth.labels("waiting").set(load["waiting"] if load else 0)
    state.metrics.draining.set(1 if state.drain.draining else 0)
    state.metrics.in_flight.set(state.drain.in_flight)
    bridge = state.bridge
    if bridge is not None:
        state.metrics.mqtt_clients.set(bridge.connected_clients())
    state.metrics.ops.refresh(state.settings)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
