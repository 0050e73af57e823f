"""Assemble the gateway's ASGI app, and run it under uvicorn."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from appliance.config import Settings
from appliance.engine.client import EngineClient
from appliance.gateway import errors
from appliance.gateway.chat.api_router import router as chat_router
from appliance.gateway.chat.serving import ChatService
from appliance.gateway.health import router as health_router
from appliance.gateway.messages_api import router as messages_router
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.middleware.body_limit import BodyLimitMiddleware
from appliance.gateway.middleware.metrics import MetricsMiddleware
from appliance.gateway.models_api import router as models_router
from appliance.gateway.mqtt.bridge import MqttBridge
from appliance.gateway.ws import router as ws_router
from appliance.router.hub import Hub
from appliance.router.pipeline import Pipeline
from appliance.store.db import connect, open_cipher
from appliance.store.messages import MessageStore

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    metrics = GatewayMetrics()
    client = EngineClient(settings.paths.engine_socket, on_restart=metrics.engine_restarts.inc)

    hub = Hub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = MessageStore(connect(settings.paths.database, settings.store.synchronous),
                             open_cipher(settings))
        pipeline = Pipeline(settings, store, client, hub)
        app.state.pipeline = pipeline
        await client.start()
        await pipeline.start()
        bridge = MqttBridge(settings, pipeline) if settings.mqtt.enabled else None
        if bridge is not None:
            await bridge.start()
        settings.paths.run_dir.mkdir(parents=True, exist_ok=True)
        (settings.paths.run_dir / "gateway.pid").write_text(str(os.getpid()))
        yield
        if bridge is not None:
            await bridge.stop()
        await pipeline.stop()
        await client.close()
        store.db.close()

    app = FastAPI(title="Edge AI appliance", version="0.1.0", lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = client
    app.state.metrics = metrics
    app.state.chat = ChatService(settings, client, metrics)
    errors.install(app)
    app.include_router(health_router)
    app.include_router(models_router)
    app.include_router(chat_router)
    app.include_router(messages_router)
    app.include_router(ws_router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.http.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def serve(settings: Settings) -> None:
    app = create_app(settings)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_level="info",
                loop="uvloop", http="httptools", ws="websockets-sansio",
                timeout_graceful_shutdown=5, access_log=False)
