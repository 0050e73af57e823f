"""Shared fixtures: a prepared model directory, and real appliances on loopback ports.

Every end-to-end test talks to a real ``appliance up``: the selfheal supervisor, a real engine
process running the default model on OpenVINO, and the real gateway under uvicorn.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from appliance.config import load
from appliance.engine.loader import prepare_model
from appliance.models.embedding import prepare_embedding
from tests.leakcheck import _suite_temp, pytest_configure, pytest_sessionfinish  # noqa: F401

MODEL = "smollm2-135m-instruct"
READY_TIMEOUT_S = 180


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, and never one this run handed out before: the
    kernel may offer a just-released port again, and a box's HTTP, MQTT and WebSocket ports
    are picked before any of them is bound."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh loopback port in 100 tries")


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose models/ holds the converted default model and embedding model,
    and a warm cache."""
    data_dir = tmp_path_factory.mktemp("store")
    (data_dir / "cache").mkdir()
    os.environ["APPLIANCE_PATHS__DATA_DIR"] = str(data_dir)
    try:
        settings = load(data_dir / "none.toml").settings
        prepare_model(settings)
        prepare_embedding(settings.paths.models_dir)
    finally:
        del os.environ["APPLIANCE_PATHS__DATA_DIR"]
    return data_dir


@dataclass
class Appliance:
    process: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log_path: Path
    mqtt_port: int = 0
    tls: bool = False
    mqtt_ws_port: int = 0

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "secrets" / "tls" / "ca.crt"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client passes as ``verify``: the box's CA when TLS is on."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    def engine_pid(self) -> int:
        return int((self.data_dir / "run" / "engine.pid").read_text())

    def gateway_pid(self) -> int:
        return int((self.data_dir / "run" / "gateway.pid").read_text())

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"appliance exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, OSError):  # OSError: no CA file yet
                if httpx.get(f"{self.base_url}/readyz", timeout=2,
                             verify=self.verify).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"appliance not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The end of the log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-6000:]

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(model_store: Path, tmp: Path, wait_ready: bool = True,
           **env_overrides: str) -> Appliance:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Share the converted model and the compiled-model cache; everything else is private.
    for name in ("models", "cache"):
        link = data_dir / name
        if not link.exists():
            link.symlink_to(model_store / name)
    port, mqtt_port = free_port(), free_port()
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(data_dir),
           "APPLIANCE_HTTP__PORT": str(port), "APPLIANCE_CONFIG": str(tmp / "none.toml"),
           "APPLIANCE_MQTT__PORT": str(mqtt_port), "APPLIANCE_MQTT__WS_PORT": "0",
           # The functional suites run without tokens; tests/security runs the secured box.
           "APPLIANCE_SECURITY__AUTH": "false",
           # No self-benchmarks competing with the tests (tests/ops runs them on purpose).
           "APPLIANCE_OPS__BENCH_ON_UPGRADE": "false", "APPLIANCE_OPS__BENCH_EVERY_S": "0",
           "APPLIANCE_OPS__IDLE_UNLOAD_S": "0",  # a reload mid-suite would only add noise
           **env_overrides}
    log_path = tmp / "appliance.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "appliance", "up"], env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    tls = env["APPLIANCE_SECURITY__TLS"].lower() == "true" if "APPLIANCE_SECURITY__TLS" in env \
        else False
    appliance = Appliance(process, data_dir, port, log_path, mqtt_port, tls,
                          int(env["APPLIANCE_MQTT__WS_PORT"]))
    if not wait_ready:
        return appliance
    try:
        appliance.wait_ready()
    except Exception:
        appliance.stop()
        raise
    return appliance


@pytest.fixture(scope="session")
def appliance(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """One appliance shared by the tests that do not disturb it."""
    instance = _start(model_store, tmp_path_factory.mktemp("shared"))
    yield instance
    instance.stop()


@pytest.fixture
def start_appliance(model_store: Path, tmp_path: Path) -> Iterator[Callable[..., Appliance]]:
    """A private appliance (settings as env overrides), for tests that break or fill it."""
    started: list[Appliance] = []

    def start(wait_ready: bool = True, **env: str) -> Appliance:
        instance = _start(model_store, tmp_path / f"a{len(started)}", wait_ready, **env)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="module")
def start_module_appliance(model_store: Path, tmp_path_factory: pytest.TempPathFactory
                           ) -> Iterator[Callable[..., Appliance]]:
    """Like ``start_appliance``, shared by the tests of one module that use the same settings."""
    started: list[Appliance] = []

    def start(wait_ready: bool = True, **env: str) -> Appliance:
        instance = _start(model_store, tmp_path_factory.mktemp("module"), wait_ready, **env)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def ir_dir(model_store: Path) -> Path:
    return model_store / "models" / MODEL


@pytest.fixture
def scratch_models(tmp_path: Path, model_store: Path) -> Path:
    """An empty models directory to populate per test."""
    path = tmp_path / "models"
    path.mkdir()
    return path


def copy_ir(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
