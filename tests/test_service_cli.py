"""``appliance service``: a real appliance started in the background through the CLI, found
again through --config and $APPLIANCE_CONFIG, stopped; stale pidfiles; exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import appliance
from selfheal.daemon import group_members
from tests.conftest import free_port


@dataclass
class Box:
    config: Path
    data_dir: Path
    port: int

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "run" / "appliance.pid"


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def service(*args: str, config: Path | None = None,
            env_config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``appliance service ARGS`` in its own process, as a person or Ansible runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    if env_config is not None:
        env["APPLIANCE_CONFIG"] = str(env_config)
    argv = [sys.executable, "-m", "appliance", "service", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def make_box(root: Path, model_store: Path | None = None) -> Box:
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    if model_store is not None:  # share the converted model and the compiled-model cache
        for name in ("models", "cache"):
            (data_dir / name).symlink_to(model_store / name)
    port = free_port()
    config = root / "appliance.toml"
    config.write_text(f'[paths]\ndata_dir = "{data_dir}"\n[http]\nport = {port}\n'
                      f"[mqtt]\nport = {free_port()}\nws_port = 0\n"
                      "[security]\nauth = false\n[ops]\nenabled = false\n")
    return Box(config, data_dir, port)


@pytest.fixture(scope="module")
def box(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    made = make_box(tmp_path_factory.mktemp("service"), model_store)
    yield made
    service("stop", "--timeout", "20", config=made.config)
    with contextlib.suppress(OSError, ValueError):  # the test failed before its own stop
        os.killpg(json.loads(made.pidfile.read_text())["pid"], signal.SIGKILL)


@pytest.mark.e2e
def test_start_status_again_restart_stop(box: Box) -> None:
    started = service("start", "--wait-ready", "120", config=box.config)
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.startswith("started (pid ")

    status = service("status", "--json", env_config=box.config)  # found through the env
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert found["running"] and found["version"] == appliance.__version__
    assert found["executable"] == sys.executable and found["started"]
    pid = found["pid"]
    assert f"pid {pid}, version {appliance.__version__}" in started.stdout
    assert os.getsid(pid) == pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[-3:-1] == [b"--config", str(box.config.resolve()).encode()]
    assert httpx.get(f"http://127.0.0.1:{box.port}/readyz", timeout=5).status_code == 200

    again = service("start", config=box.config)
    assert again.returncode == 0
    assert again.stdout.strip() == f"already running (pid {pid}, version {appliance.__version__})"

    restarted = service("restart", "--wait-ready", "120", config=box.config)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert restarted.stdout.startswith("stopped\nstarted (pid ")
    new_pid = json.loads(box.pidfile.read_text())["pid"]
    assert new_pid != pid and gone(pid)
    assert httpx.get(f"http://127.0.0.1:{box.port}/readyz", timeout=5).status_code == 200

    stopped = service("stop", config=box.config)
    assert (stopped.returncode, stopped.stdout) == (0, "stopped\n")
    assert not box.pidfile.exists() and gone(new_pid) and not group_members(new_pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{box.port}/readyz", timeout=5)
    status = service("status", config=box.config)
    assert (status.returncode, status.stdout) == (3, "not running\n")
    assert "appliance service start" in (box.data_dir / "log" / "appliance.log").read_text()


def test_stop_and_status_when_not_running(tmp_path: Path) -> None:
    box = make_box(tmp_path)
    stopped = service("stop", config=box.config)
    assert (stopped.returncode, stopped.stdout) == (0, "not running\n")
    status = service("status", "--json", config=box.config)
    assert status.returncode == 3
    assert json.loads(status.stdout)["running"] is False


def test_a_stale_pidfile_is_not_running_and_is_removed(tmp_path: Path) -> None:
    box = make_box(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    box.pidfile.parent.mkdir(parents=True)
    box.pidfile.write_text(json.dumps({"pid": gone.pid, "started": 1.0, "version": "0.0.1",
                                       "executable": sys.executable, "argv": [], "log": "x"}))
    status = service("status", config=box.config)
    assert (status.returncode, status.stdout) == (3, "not running\n")
    assert not box.pidfile.exists()
    box.pidfile.write_text(box.pidfile.parent.name)  # garbage, and then stop
    stopped = service("stop", config=box.config)
    assert (stopped.returncode, stopped.stdout) == (0, "not running\n")
    assert not box.pidfile.exists()


def test_a_bad_configuration_is_refused_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[http]\nport = 0\n")
    for verb in ("start", "stop", "status"):
        result = service(verb, config=config)
        assert result.returncode == 2, (verb, result.stdout, result.stderr)
        assert "http.port" in result.stderr
