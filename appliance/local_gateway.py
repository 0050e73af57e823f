"""How a process on the box reaches the box's own gateway (probes, the ops scraper, the
update's readiness check, ``appliance up``'s greeting): loopback for a wildcard bind, an IPv6
host in brackets, and the box's CA when TLS is on. Built here only, so the copies cannot
differ."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Settings

WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class LocalGateway:
    host: str   # as it goes in a URL (IPv6 bracketed)
    port: int
    tls: bool
    ca_file: Path

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def verify(self) -> ssl.SSLContext | bool:
        """The TLS check for this gateway, read now (a first ``up`` creates the CA). Raises
        ``OSError`` or ``ssl.SSLError`` when TLS is on and the CA is missing or unusable."""
        if not self.tls:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))


def local_gateway(settings: Settings) -> LocalGateway:
    from appliance.security.pki import tls_files

    host = settings.http.host
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return LocalGateway(host=host, port=settings.http.port, tls=settings.security.tls,
                        ca_file=tls_files(settings.paths.secrets_dir).ca_cert)
