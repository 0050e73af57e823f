"""The plugins over HTTP, scope ``admin``: what is installed and what waits, and the approval
an operator gives from the dashboard instead of ``appliance plugins approve``.

- ``GET /v1/plugins``: ``{"plugins": [{"name", "version", "enabled", "approved": [...],
  "pending": {"version", "asks": [...]} | null, ...}]}``.
- ``POST /v1/plugins/{name}/approve``: runs the waiting version with what it asks for.
- ``POST /v1/plugins/{name}/enable`` and ``/disable``.

Installing stays on the CLI (and Ansible): a package is a file on the box, signed. A refusal
(no such plugin, nothing waiting) is a 404 or 409 naming it; the running plugins are not
touched.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from appliance.gateway.auth import require
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.plugins.package import PluginRefused
from appliance.plugins.registry import PluginRegistry, plugins_root

router = APIRouter(prefix="/v1/plugins", dependencies=[Depends(require("admin"))])


def _registry(request: Request) -> PluginRegistry:
    return PluginRegistry(plugins_root(gateway_state(request).settings))


def _refused(exc: PluginRefused) -> APIError:
    text = str(exc)
    if text.startswith("no plugin named"):
        return APIError(404, text, code="plugin_not_found")
    return APIError(409, text, code="plugin_refused")


@router.get("")
def list_plugins(request: Request) -> dict[str, Any]:
    return {"plugins": [r.to_json() for r in _registry(request).list()]}


@router.post("/{name}/{action}")
def change_plugin(request: Request, name: str,
                  action: Literal["approve", "enable", "disable"]) -> dict[str, Any]:
    registry = _registry(request)
    try:
        if action == "approve":
            outcome = registry.approve(name)
            return {"name": outcome.name, "version": outcome.version,
                    "status": outcome.status, "capabilities": outcome.capabilities}
        getattr(registry, action)(name)
    except PluginRefused as exc:
        raise _refused(exc) from None
    [record] = [r for r in registry.list() if r.name == name]
    return record.to_json()
