"""Running the installed plugins: one confined process each, spoken to in JSON-RPC lines.

A plugin starts on the first call that needs it and stays up. Each call is bounded by
``plugins.call_timeout_s`` from the moment it is asked, waiting for the plugin included, so a
conversation is never held longer than that. While it answers, the plugin may make requests of
the box; each one is checked against the capabilities the operator approved, and a request
for anything else stops the call and the process (a plugin that asks for what it was not given
is not trusted to go on). A crash, a hang or a broken rule is logged and counted, the person
gets an error reply, and the plugin is started again on a later call after a backoff that
doubles with each failure in a row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import httpx

from appliance.config import Settings
from appliance.plugins import sandbox
from appliance.skills.manifest import Capabilities, PluginManifest

log = logging.getLogger(__name__)
SDK_SOURCE = Path(__file__).parent / "sdk" / "appliance_plugin.py"
MAX_LINE = 1024 * 1024
STDERR_KEPT = 20
STDERR_LOGGED = 200

# Events, as counted and logged: why a plugin call did not answer, and the plugin's lifecycle.
STARTED, CRASHED, TIMEOUT, DENIED, ERROR, UNAVAILABLE = (
    "started", "crashed", "timeout", "denied", "error", "unavailable")

Count = Callable[[str, str], None]
Generate = Callable[[str, str, int], Awaitable[str]]
Search = Callable[[str, int, str], Awaitable[list[dict[str, Any]]]]  # query, k, conversation


class Runnable(Protocol):
    """An installed, approved and enabled plugin (the registry's ``ActivePlugin``)."""
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def folder(self) -> Path: ...
    @property
    def manifest(self) -> PluginManifest: ...
    @property
    def granted(self) -> Capabilities: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def secrets_dir(self) -> Path: ...


class PluginFailure(Exception):
    """A plugin call that did not answer; ``event`` is one of the counted events."""

    def __init__(self, plugin: str, event: str, reason: str) -> None:
        super().__init__(f"{plugin}: {event}: {reason}")
        self.plugin, self.event, self.reason = plugin, event, reason


@dataclass(frozen=True)
class CallContext:
    request: str
    conversation: str
    sender: str
    language: str


@dataclass
class PluginReply:
    text: str
    sent: list[str] = field(default_factory=list)  # conversation.send, in order


@dataclass(frozen=True)
class BoxServices:
    """What the box lends a plugin, each behind a capability."""
    generate: Generate | None = None
    search: Search | None = None


class ServiceError(Exception):
    """A service the plugin may use failed (the engine restarting, no knowledge base yet)."""


class _Denied(Exception):
    """A request beyond the plugin's capabilities: the call and the process stop."""


class _Refused(Exception):
    """A request the plugin may make but that failed (a budget spent, a host down): the
    plugin hears the error and may go on."""


def host_allowed(url: httpx.URL, declared: Sequence[str]) -> bool:
    """``host`` allows any port of that host, ``host:port`` only that port."""
    port = url.port or (443 if url.scheme == "https" else 80)
    host = url.host.lower()
    for entry in declared:
        name, _, want = entry.lower().rpartition(":") if ":" in entry else (entry.lower(), "",
                                                                              "")
        if name == host and (not want or want == str(port)):
            return True
    return False


class PluginProcess:
    """One plugin's process, its limits, and its restart backoff."""

    def __init__(self, plugin: Runnable, settings: Settings, sdk_dir: Path,
                 services: BoxServices, fetcher: httpx.AsyncClient, count: Count) -> None:
        self.plugin = plugin
        self.settings = settings
        self.config = settings.plugins
        self.sdk_dir = sdk_dir
        self.services = services
        self.fetcher = fetcher
        self.count = count
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.failures = 0
        self.retry_at = 0.0
        self.last_failure = ""
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEPT)
        self._stderr_task: asyncio.Task[None] | None = None
        self._next_id = 0

    @property
    def name(self) -> str:
        return self.plugin.name

    async def call(self, skill: str, arguments: dict[str, Any], context: CallContext
                   ) -> PluginReply:
        held = False
        try:
            async with asyncio.timeout(self.config.call_timeout_s):
                async with self.lock:
                    held = True
                    return await self._call(skill, arguments, context)
        except TimeoutError:
            limit = f"{self.config.call_timeout_s:g} s"
            if not held:  # busy with other conversations' calls: not the plugin's fault
                self.count(self.name, UNAVAILABLE)
                raise PluginFailure(self.name, UNAVAILABLE,
                                    f"busy with other calls for {limit}") from None
            await self._fail(TIMEOUT, f"no answer within {limit}")
            raise PluginFailure(self.name, TIMEOUT, f"no answer within {limit}") from None

    async def _call(self, skill: str, arguments: dict[str, Any], context: CallContext
                    ) -> PluginReply:
        proc = await self._running()
        assert proc.stdin is not None and proc.stdout is not None
        self._next_id += 1
        ident = self._next_id
        await self._send(proc, {"jsonrpc": "2.0", "id": ident, "method": "call", "params": {
            "skill": skill, "arguments": arguments, "request": context.request,
            "conversation": context.conversation, "sender": context.sender,
            "language": context.language}})
        reply = PluginReply("")
        budget = [self.plugin.granted.model_tokens]
        while True:
            message = await self._receive(proc)
            if "method" in message:
                await self._serve(proc, message, reply, budget, context)
                continue
            if message.get("id") != ident:
                await self._fail(DENIED, "answered a call it was not asked")
                raise PluginFailure(self.name, DENIED, "answered a call it was not asked")
            if "error" in message:
                error = message["error"] if isinstance(message["error"], dict) else {}
                reason = str(error.get("message", "failed"))[:500]
                self.count(self.name, ERROR)
                log.warning("plugin %s: %s failed: %s", self.name, skill, reason)
                raise PluginFailure(self.name, ERROR, reason)
            result = message.get("result")
            text = result.get("text") if isinstance(result, dict) else None
            if not isinstance(text, str):
                await self._fail(DENIED, "answered without a text")
                raise PluginFailure(self.name, DENIED, "answered without a text")
            self.failures = 0
            reply.text = text
            return reply

    async def _serve(self, proc: asyncio.subprocess.Process, message: dict[str, Any],
                     reply: PluginReply, budget: list[int], context: CallContext) -> None:
        method = message.get("method")
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        assert isinstance(params, dict)
        try:
            result = await self._request(str(method), params, reply, budget, context)
        except _Denied as exc:
            await self._fail(DENIED, str(exc))
            raise PluginFailure(self.name, DENIED, str(exc)) from None
        except (_Refused, ServiceError) as exc:
            await self._send(proc, {"jsonrpc": "2.0", "id": message.get("id"),
                                    "error": {"code": -32002, "message": str(exc)}})
            return
        await self._send(proc, {"jsonrpc": "2.0", "id": message.get("id"), "result": result})

    async def _request(self, method: str, params: dict[str, Any], reply: PluginReply,
                       budget: list[int], context: CallContext) -> dict[str, Any]:
        granted = self.plugin.granted
        if method == "model.generate":
            if granted.model_tokens <= 0 or self.services.generate is None:
                raise _Denied("asked the model without the model_tokens capability")
            wanted = _int(params.get("max_tokens"), 64)
            if budget[0] <= 0:
                raise _Refused(f"this call's {granted.model_tokens} model tokens are spent")
            tokens = max(1, min(wanted, budget[0]))
            budget[0] -= tokens
            text = await self.services.generate(str(params.get("system") or ""),
                                                str(params.get("prompt", "")), tokens)
            return {"text": text}
        if method == "kb.search":
            if not granted.knowledge or self.services.search is None:
                raise _Denied("searched the knowledge base without the knowledge capability")
            hits = await self.services.search(str(params.get("query", "")),
                                              max(1, min(_int(params.get("k"), 3), 10)),
                                              context.conversation)
            return {"hits": hits}
        if method == "conversation.send":
            if not granted.message:
                raise _Denied("messaged the conversation without the message capability")
            reply.sent.append(str(params.get("text", ""))[:4000])
            return {}
        if method == "secret.read":
            name = str(params.get("name", ""))
            if name not in granted.secrets:
                raise _Denied(f"asked for secret {name!r}, which it was not granted")
            path = self.plugin.secrets_dir / name
            try:
                return {"value": path.read_text(encoding="utf-8")}
            except FileNotFoundError:
                raise _Refused(f"secret {name!r} is not set on this box "
                               f"(appliance plugins secret {self.name} {name})") from None
        if method == "net.fetch":
            return await self._fetch(params)
        raise _Denied(f"asked for {method!r}, which the box does not offer")

    async def _fetch(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            url = httpx.URL(str(params.get("url", "")))
        except httpx.InvalidURL as exc:
            raise _Refused(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise _Refused("only http and https URLs can be fetched")
        if not host_allowed(url, self.plugin.granted.network):
            raise _Denied(f"connected to {url.host}:{url.port or url.scheme}, which is not a "
                          "declared and approved host")
        method = str(params.get("method") or "GET").upper()
        headers = params.get("headers") if isinstance(params.get("headers"), dict) else {}
        body = params.get("body")
        try:
            async with self.fetcher.stream(
                    method, url, headers={str(k): str(v) for k, v in (headers or {}).items()},
                    content=body.encode() if isinstance(body, str) else None) as response:
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.config.fetch_max_bytes:
                        raise _Refused(f"the response is larger than "
                                       f"{self.config.fetch_max_bytes} bytes")
        except httpx.HTTPError as exc:
            raise _Refused(f"fetch failed: {type(exc).__name__}: {exc}") from None
        return {"status": response.status_code, "headers": dict(response.headers),
                "body": data.decode("utf-8", "replace")}

    async def _running(self) -> asyncio.subprocess.Process:
        if self.proc is not None and self.proc.returncode is None:
            return self.proc
        wait = self.retry_at - time.monotonic()
        if wait > 0:
            self.count(self.name, UNAVAILABLE)
            raise PluginFailure(self.name, UNAVAILABLE,
                                f"restarting after {self.last_failure}; back in {wait:.1f} s")
        return await self._start()

    async def _start(self) -> asyncio.subprocess.Process:
        plugin, config = self.plugin, self.config
        try:
            who = sandbox.run_as(config.run_as_user)
        except ValueError as exc:
            await self._fail(CRASHED, str(exc))
            raise PluginFailure(self.name, CRASHED, str(exc)) from None
        data_dir = plugin.data_dir if plugin.granted.files else None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            if who.uid is not None:
                os.chown(data_dir, who.uid, who.gid or -1)
        already = sandbox.processes_of(who.uid if who.uid is not None else os.getuid())
        argv = sandbox.sandbox_argv(sandbox.Confinement(
            config.sandbox, config.python, plugin.folder, plugin.manifest.plugin.entry,
            self.sdk_dir, data_dir,
            sandbox.Limits(config.memory_mb * 1024 * 1024, config.max_processes,
                           config.cpu_s)), already, who)
        log.debug("plugin %s: %s", plugin.name, " ".join(argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=MAX_LINE, start_new_session=True,
                env={"PATH": "/usr/bin:/bin"})
        except (OSError, ValueError) as exc:
            await self._fail(CRASHED, f"could not start the sandbox: {exc}")
            raise PluginFailure(self.name, CRASHED, f"could not start: {exc}") from None
        self.proc = proc
        self.stderr.clear()
        self._stderr_task = asyncio.create_task(self._drain_stderr(proc))
        try:
            async with asyncio.timeout(config.start_timeout_s):
                ready = await self._receive(proc)
        except TimeoutError:
            await self._fail(TIMEOUT, f"not ready within {config.start_timeout_s:g} s")
            raise PluginFailure(self.name, TIMEOUT, "did not start in time") from None
        if ready.get("method") != "ready":
            await self._fail(DENIED, "did not begin with 'ready'")
            raise PluginFailure(self.name, DENIED, "did not begin with 'ready'")
        self.count(self.name, STARTED)
        log.info("plugin %s %s started (pid %s)", plugin.name, plugin.version, proc.pid)
        return proc

    async def _send(self, proc: asyncio.subprocess.Process, message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self._crashed(proc)

    async def _receive(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        try:
            line = await proc.stdout.readline()
        except (ValueError, asyncio.LimitOverrunError):
            await self._fail(DENIED, f"wrote a line longer than {MAX_LINE} bytes")
            raise PluginFailure(self.name, DENIED, "wrote an over-long message") from None
        if not line:
            await self._crashed(proc)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await self._fail(DENIED, "wrote something that is not JSON-RPC 2.0")
            raise PluginFailure(self.name, DENIED, "broke the protocol")
        return message

    async def _crashed(self, proc: asyncio.subprocess.Process) -> NoReturn:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await proc.wait()
        if self._stderr_task is not None:  # the last words, for the log
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1):
                    await self._stderr_task
        code = proc.returncode
        how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit status {code}")
        last = self.stderr[-1] if self.stderr else ""
        await self._fail(CRASHED, f"{how}" + (f" ({last})" if last else ""))
        raise PluginFailure(self.name, CRASHED, how + (f": {last}" if last else ""))

    async def _fail(self, event: str, reason: str) -> None:
        """Stop the process, log and count why, and back off before the next start."""
        self.count(self.name, event)
        self.failures += 1
        delay = min(self.config.restart_backoff_s * 2 ** (self.failures - 1),
                    self.config.restart_backoff_max_s)
        self.retry_at = time.monotonic() + delay
        self.last_failure = event
        log.warning("plugin %s stopped: %s: %s (restart in %.1f s)", self.name, event, reason,
                    delay)
        await self.stop()

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        logged = 0
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()[:500]
            self.stderr.append(text)
            if logged < STDERR_LOGGED:
                log.info("plugin %s: %s", self.name, text)
                logged += 1

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class PluginHost:
    """The active plugins as the skill router sees them: their manifests and a call."""

    def __init__(self, settings: Settings, active: Callable[[], Sequence[Runnable]],
                 stamp: Callable[[], float], services: BoxServices, count: Count,
                 sdk_dir: Path) -> None:
        self.settings = settings
        self._active = active
        self._stamp = stamp
        self.services = services
        self.count = count
        self.sdk_dir = sdk_dir
        self.fetcher = httpx.AsyncClient(timeout=settings.plugins.fetch_timeout_s,
                                         follow_redirects=False, trust_env=False)
        self.processes: dict[str, PluginProcess] = {}
        self._skill_plugin: dict[str, str] = {}
        self._seen: float | None = None
        install_sdk(sdk_dir)

    def refresh(self) -> bool:
        """Reread the registry when it changed (one stat); True when the set changed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        current = {p.name: p for p in self._active()} if self.settings.plugins.enabled else {}
        for name in list(self.processes):
            old = self.processes[name]
            new = current.get(name)
            if new is None or (new.version, new.granted) != (old.plugin.version,
                                                              old.plugin.granted):
                task = asyncio.get_running_loop().create_task(old.stop())
                task.add_done_callback(lambda _: None)
                del self.processes[name]
        for name, plugin in current.items():
            if name not in self.processes:
                self.processes[name] = PluginProcess(plugin, self.settings, self.sdk_dir,
                                                     self.services, self.fetcher, self.count)
        self._skill_plugin = {s.name: name for name, plugin in current.items()
                              for s in plugin.manifest.skills}
        return True

    def manifests(self) -> list[PluginManifest]:
        return [p.plugin.manifest for p in self.processes.values()]

    def plugin_of(self, skill: str) -> str | None:
        return self._skill_plugin.get(skill)

    async def call(self, skill: str, arguments: dict[str, Any], context: CallContext
                   ) -> PluginReply:
        name = self._skill_plugin.get(skill)
        if name is None or name not in self.processes:
            raise PluginFailure(skill, UNAVAILABLE, "no enabled plugin offers this skill")
        return await self.processes[name].call(skill, arguments, context)

    async def close(self) -> None:
        for process in self.processes.values():
            await process.stop()
        await self.fetcher.aclose()


def install_sdk(sdk_dir: Path) -> None:
    """The SDK where the sandbox mounts it from: a folder the plugins' user can read."""
    sdk_dir.mkdir(parents=True, exist_ok=True)
    sdk_dir.chmod(0o755)
    target = sdk_dir / SDK_SOURCE.name
    if not target.exists() or target.read_bytes() != SDK_SOURCE.read_bytes():
        shutil.copyfile(SDK_SOURCE, target)
        target.chmod(0o644)
