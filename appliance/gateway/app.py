"""Assemble the gateway's ASGI app, and run it under uvicorn."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import Depends, FastAPI

from appliance.config import Settings
from appliance.engine.client import EngineClient
from appliance.gateway import errors
from appliance.gateway.auth import require
from appliance.gateway.chat.api_router import router as chat_router
from appliance.gateway.chat.serving import ChatService
from appliance.gateway.dashboard import router as dashboard_router
from appliance.gateway.drain_api import router as drain_router
from appliance.gateway.embeddings_api import router as embeddings_router
from appliance.gateway.health import metrics_router
from appliance.gateway.health import router as health_router
from appliance.gateway.im import ROUTERS as IM_ROUTERS
from appliance.gateway.im import senders as im_senders
from appliance.gateway.kb_api import UPLOAD_PATH, UPLOAD_SLACK, embed_with, embedding_model
from appliance.gateway.kb_api import router as kb_router
from appliance.gateway.messages_api import router as messages_router
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.middleware.body_limit import BodyLimitMiddleware
from appliance.gateway.middleware.metrics import MetricsMiddleware
from appliance.gateway.models_api import router as models_router
from appliance.gateway.mqtt.bridge import MqttBridge
from appliance.gateway.ops_api import router as ops_router
from appliance.gateway.plugins_api import router as plugins_router
from appliance.gateway.security_api import router as security_router
from appliance.gateway.state import GatewayState
from appliance.gateway.webchat import router as webchat_router
from appliance.gateway.webhooks import CallbackSender
from appliance.gateway.webhooks import router as webhooks_router
from appliance.gateway.ws import router as ws_router
from appliance.kb.extract import MB
from appliance.kb.service import Knowledge
from appliance.plugins.services import box_services, plugin_host
from appliance.router.drain import Drain
from appliance.router.hub import Hub
from appliance.router.knowledge import KnowledgeRetriever
from appliance.router.outbox import OutboxWorker
from appliance.router.pipeline import Pipeline
from appliance.security.access import Access, log_refusal, signing_keys
from appliance.security.integrations import Integrations
from appliance.security.pki import tls_files
from appliance.security.replay import ReplayGuard
from appliance.security.signing import sign_event
from appliance.security.tls import ReloadingContext
from appliance.skills.handoff import HandoffSender
from appliance.skills.router import SkillRouter
from appliance.store.db import connect, open_cipher
from appliance.store.im_integrations import ImIntegrations
from appliance.store.messages import MessageStore
from appliance.store.outbox import Outbox
from appliance.store.rekey import rekey_forever
from appliance.version import running_version
from selfheal.notify import keep_alive, ready

log = logging.getLogger(__name__)


def create_app(settings: Settings, tls: ReloadingContext | None = None) -> FastAPI:
    metrics = GatewayMetrics()
    keys = signing_keys(settings)
    keys.ensure()
    client = EngineClient(settings.paths.engine_socket, on_restart=metrics.engine_restarts.inc)
    drain = Drain(client, on_refused=metrics.rejected.labels("draining").inc)

    hub = Hub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = MessageStore(connect(settings.paths.database, settings.store.synchronous),
                             open_cipher(settings))
        knowledge = Knowledge(settings, store.cipher, embed_with(client), embedding_model(client))
        outbox_store = Outbox(store.db, store.cipher)
        plugins = plugin_host(settings, box_services(settings, client, knowledge),
                              lambda plugin, event: metrics.plugin_events.labels(
                                  plugin, event).inc())
        skills = SkillRouter(settings, store, client, embed_with(client),
                             lambda: embedding_model(client)() is not None, outbox_store,
                             plugins=plugins)
        pipeline = Pipeline(settings, store, client, hub, drain,
                            KnowledgeRetriever(knowledge, settings.kb), skills)
        security_db = connect(settings.paths.database, settings.store.synchronous)

        def count_refusal(channel: str, reason: str) -> None:
            metrics.auth_refusals.labels(channel.split(" ")[0], reason).inc()

        def on_refused(channel: str, peer: str, reason: str, detail: str) -> None:
            log_refusal(channel, peer, reason, detail)
            count_refusal(channel, reason)

        access = Access(settings, security_db, count_refusal) if settings.security.auth else None
        # One guard for tokens and webhook nonces (the webhooks need it with auth off too).
        replay = access.guard if access is not None else ReplayGuard(security_db)
        im = ImIntegrations(store.db, store.cipher)
        state.started(pipeline, replay, on_refused, access, knowledge, im)
        if tls is not None:
            tls.watcher.on_refused = on_refused
        background = []
        if tls is not None:
            background.append(asyncio.create_task(tls.watch(settings.security.cert_reload_s)))
        if store.cipher is not None:  # seals legacy rows, finishes interrupted rotations
            background.append(asyncio.create_task(rekey_forever(store.db, store.cipher)))
        await client.start()
        background.append(asyncio.create_task(knowledge.warm()))
        await pipeline.start()
        platforms = httpx.AsyncClient(timeout=settings.outbox.timeout_s)
        outbox = OutboxWorker(
            pipeline, outbox_store,
            [CallbackSender(state.integrations, keys, platforms),
             HandoffSender(settings.skills.handoff_url, keys, platforms),
             *im_senders(im, settings.im, platforms)], settings.outbox,
            count=lambda kind, outcome: metrics.outbox.labels(kind, outcome).inc())
        await outbox.start()
        bridge = None
        if settings.mqtt.enabled:
            bridge = MqttBridge(settings, pipeline, access, tls.context if tls else None,
                                state.sign_event)
            await bridge.start()
        state.bridge = bridge
        settings.paths.run.ensure().pidfile("gateway").write_text(str(os.getpid()))
        ready(settings.supervisor.watchdog_s)
        background.append(asyncio.create_task(  # the event loop turns
            keep_alive(watchdog_s=settings.supervisor.watchdog_s)))
        yield
        if bridge is not None:
            await bridge.stop()
        await outbox.stop()
        await platforms.aclose()
        await pipeline.stop()
        await plugins.close()
        await knowledge.close()
        await client.close()
        for task in background:
            task.cancel()
        store.db.close()

    version = running_version(settings.update.release_file)
    app = FastAPI(title="Edge AI appliance", version=version, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    state = GatewayState(
        settings=settings, version=version, engine=client, metrics=metrics, drain=drain,
        chat=ChatService(settings, client, metrics, drain), signing_keys=keys,
        sign_event=functools.partial(sign_event, keys),
        integrations=Integrations(settings.paths.secrets_dir / "webhooks"), tls=tls)
    app.state.gateway = state
    errors.install(app)
    chat = [Depends(require("chat"))]
    app.include_router(health_router)
    app.include_router(security_router)
    app.include_router(metrics_router, dependencies=[Depends(require("metrics"))])
    app.include_router(models_router, dependencies=chat)
    app.include_router(chat_router, dependencies=chat)
    app.include_router(embeddings_router, dependencies=chat)
    app.include_router(kb_router)  # admin to change, chat to search (kb_api.py)
    app.include_router(messages_router, dependencies=chat)
    app.include_router(ws_router)  # authenticates before accepting (see ws.py)
    app.include_router(webhooks_router)  # HMAC-signed by the platform, not token-bearing
    for im_router in IM_ROUTERS:  # each platform's own signature or encryption (gateway/im)
        app.include_router(im_router)
    app.include_router(ops_router)  # scope admin (see ops_api.py)
    app.include_router(drain_router)  # scope admin (see drain_api.py)
    app.include_router(plugins_router)  # scope admin (see plugins_api.py)
    app.include_router(dashboard_router)  # admin token also from ?access_token= (dashboard.py)
    app.include_router(webchat_router)  # the page is public; its calls carry the token
    if settings.ops.test_leak_endpoint:
        from appliance.gateway.test_leak import router as leak_router

        app.include_router(leak_router, dependencies=[Depends(require("admin"))])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.http.max_body_bytes,
                       max_header_bytes=settings.http.max_header_bytes,
                       larger={UPLOAD_PATH: (settings.kb.max_upload_mb * MB + UPLOAD_SLACK,
                                             f"Document uploads are limited to "
                                             f"{settings.kb.max_upload_mb} MB (kb.max_upload_mb)",
                                             "too_large")})
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def serve(settings: Settings) -> None:
    """Run under uvicorn; with ``security.tls``, on the shared TLS 1.3 context (uvicorn's own
    context options cannot pin the minimum version or reload a rotated certificate)."""
    tls = None
    if settings.security.tls:
        tls = ReloadingContext(tls_files(settings.paths.secrets_dir),
                               settings.security.client_certs)
    app = create_app(settings, tls)
    config = uvicorn.Config(app, host=settings.http.host, port=settings.http.port,
                            log_level="info", loop="uvloop", http="httptools",
                            ws="websockets-sansio", timeout_graceful_shutdown=5,
                            access_log=False)
    config.load()
    if tls is not None:
        config.ssl = tls.context
    uvicorn.Server(config).run()
