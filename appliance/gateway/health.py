"""Liveness and readiness (open to probes), and metrics (the ``metrics`` scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance.router.drain import RETRY_AFTER_S

router = APIRouter()
metrics_router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is alive and its event loop turns. Says nothing of the engine."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Any:
    drain = request.app.state.drain
    if drain.draining:  # before the engine: a draining box takes no new work, ready or not
        return JSONResponse({"status": "not_ready", "reason": "draining", "since": drain.since,
                             "in_flight": drain.in_flight}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    client = request.app.state.engine
    if client.ready:
        return {"status": "ready", "version": request.app.state.version,
                "engine": client.info.model_dump(), "load": _load(client)}
    if not client.connected:
        reason = "the engine is not connected (starting, restarting or down)"
    else:
        reason = "the engine has not answered its heartbeat"
    return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503,
                        headers={"Retry-After": "5"})


def _load(client: Any) -> dict[str, Any]:
    keys = ("active", "waiting", "capacity", "cache_usage", "generated_tokens")
    return {key: client.load.get(key) for key in keys if key in client.load}


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state
    load = state.engine.load if state.engine.ready else {}
    state.metrics.engine_up.set(1 if state.engine.ready else 0)
    state.metrics.queue_depth.labels("active").set(load.get("active", 0))
    state.metrics.queue_depth.labels("waiting").set(load.get("waiting", 0))
    state.metrics.draining.set(1 if state.drain.draining else 0)
    state.metrics.in_flight.set(state.drain.in_flight)
    bridge = getattr(state, "bridge", None)
    if bridge is not None:
        state.metrics.mqtt_clients.set(bridge.connected_clients())
    state.metrics.ops.refresh(state.settings)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
