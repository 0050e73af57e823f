"""The one way a process on the box addresses its own gateway (appliance/local_gateway.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from appliance import config
from appliance.local_gateway import local_gateway
from appliance.security.pki import init_ca, tls_files


def settings_with(tmp_path: Path, http: str, tls: bool = False) -> config.Settings:
    toml = tmp_path / "appliance.toml"
    toml.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n[http]\n{http}\n'
                    f"[security]\ntls = {str(tls).lower()}\n")
    return config.load(toml).settings


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_bind_is_reached_on_loopback(tmp_path: Path, host: str) -> None:
    gateway = local_gateway(settings_with(tmp_path, f'host = "{host}"\nport = 8123'))
    assert gateway.url("/readyz") == "http://127.0.0.1:8123/readyz"


def test_an_ipv6_host_is_bracketed(tmp_path: Path) -> None:
    gateway = local_gateway(settings_with(tmp_path, 'host = "::1"\nport = 8123'))
    assert gateway.base_url == "http://[::1]:8123"
    assert gateway.ws_url == "ws://[::1]:8123"


def test_tls_gives_https_and_checks_against_the_boxs_ca(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, 'host = "127.0.0.1"\nport = 8443', tls=True)
    init_ca(tls_files(settings.paths.secrets_dir))
    gateway = local_gateway(settings)
    assert gateway.base_url == "https://127.0.0.1:8443"
    assert gateway.ws_url == "wss://127.0.0.1:8443"
    assert gateway.ca_file == tls_files(settings.paths.secrets_dir).ca_cert
    assert isinstance(gateway.verify(), ssl.SSLContext)


def test_without_tls_there_is_nothing_to_verify(tmp_path: Path) -> None:
    assert local_gateway(settings_with(tmp_path, "port = 8123")).verify() is True


def test_tls_without_a_ca_yet_is_an_error_when_verifying(tmp_path: Path) -> None:
    gateway = local_gateway(settings_with(tmp_path, "port = 8443", tls=True))
    with pytest.raises(OSError):
        gateway.verify()
