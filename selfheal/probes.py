"""Liveness probes: is the process not just alive but answering? Each returns True or raises
or returns False; the supervisor applies the deadline and counts consecutive failures.

A process that is stopped (SIGSTOP), deadlocked or stuck in a loop still exists, so exit codes
alone never see it: the engine must answer a heartbeat on its socket, the gateway its
``/healthz``, the ops daemon must keep touching its heartbeat file.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

Probe = Callable[[], Awaitable[bool]]


def engine_heartbeat(socket_path: Path) -> Probe:
    async def probe() -> bool:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        try:
            writer.write(json.dumps({"op": "health", "seq": 1}).encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return False
                if json.loads(line).get("op") == "health":
                    return True
        finally:
            writer.close()

    return probe


def http_health(url: str, verify: ssl.SSLContext | bool = True) -> Probe:
    async def probe() -> bool:
        async with httpx.AsyncClient(verify=verify, timeout=None) as client:
            return (await client.get(url)).status_code == 200

    return probe


def heartbeat_file(path: Path, max_age_s: float) -> Probe:
    async def probe() -> bool:
        return time.time() - path.stat().st_mtime < max_age_s

    return probe
