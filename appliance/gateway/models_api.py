"""``GET /v1/models``: what this appliance serves, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state

router = APIRouter()


def _model(request: Request) -> dict[str, Any]:
    service = gateway_state(request).chat
    info = gateway_state(request).engine.info
    entry: dict[str, Any] = {"id": service.served_model(), "object": "model", "created": 0,
                             "owned_by": "appliance"}
    if info is not None:
        entry.update(device=info.device, context_length=info.context_length)
    return entry


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model(request)]}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    model = _model(request)
    if model_id.lower() != model["id"]:
        raise APIError(404, f"The model '{model_id}' does not exist on this appliance",
                       param="model", code="model_not_found")
    return model
