"""A secured appliance (TLS 1.3 on every listener, tokens required), shared by the security
suites, and helpers that mint tokens the way an attacker or an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.security.tokens import SigningKeys, issue
from tests.conftest import Appliance, _start, free_port

SECURE_ENV = {"APPLIANCE_SECURITY__AUTH": "true", "APPLIANCE_SECURITY__TLS": "true",
              "APPLIANCE_SECURITY__CERT_RELOAD_S": "0.5"}


@pytest.fixture(scope="session")
def secure_box(model_store: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Appliance]:
    instance = _start(model_store, tmp_path_factory.mktemp("secure"),
                      APPLIANCE_MQTT__WS_PORT=str(free_port()), **SECURE_ENV)
    yield instance
    instance.stop()


def cli(box: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    """``appliance ...`` against the box's data directory, as an operator would run it."""
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml"),
           "APPLIANCE_HTTP__PORT": str(box.port), **SECURE_ENV}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def operator_token(box: Appliance, sub: str, *scopes: str, ttl: str = "1h",
                   once: bool = False) -> str:
    args = ["token", "issue", "--sub", sub, "--ttl", ttl]
    for scope in scopes:
        args += ["--scope", scope]
    if once:
        args.append("--once")
    done = cli(box, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def box_keys(box: Appliance) -> SigningKeys:
    return SigningKeys(box.data_dir / "secrets" / "jwt")


def crafted(box: Appliance, **overrides: Any) -> str:
    """A token signed by the box's own key with chosen claims (e.g. a past ``now``)."""
    options: dict[str, Any] = {"sub": "mallory", "scopes": ["chat"], "ttl_s": 3600,
                               "issuer": "appliance", "audience": "appliance"}
    options.update(overrides)
    return issue(box_keys(box), **options)[0]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwks(box: Appliance) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{box.base_url}/.well-known/jwks.json", verify=box.verify).json()
