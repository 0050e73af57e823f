"""TEST ONLY (``ops.test_leak_endpoint``): ``POST /v1/ops/test/leak`` makes the gateway hold
memory, so fault-injection tests can watch a real leak being noticed and the gateway being
restarted gently. Never registered unless that setting is on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

router = APIRouter()
_held: list[bytearray] = []


@router.post("/v1/ops/test/leak")
async def leak(mb: int = Query(10, ge=1, le=256)) -> dict[str, Any]:
    block = bytearray(mb * 2**20)
    for offset in range(0, len(block), 4096):  # touch every page: real resident memory
        block[offset] = 1
    _held.append(block)
    return {"held_mb": sum(len(b) for b in _held) // 2**20}
