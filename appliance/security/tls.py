"""Server TLS: version 1.3 only, optional or required client certificates, hot reload.

One ``ssl.SSLContext`` serves HTTPS, WSS and MQTTS. Loading a new chain into a live context
affects the handshakes that follow, so rotating the certificate files (``appliance certs
renew``) needs no restart: :meth:`ReloadingContext.watch` looks for changed files.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from appliance.security.pki import PkiError, TlsFiles

log = logging.getLogger(__name__)

VERIFY_MODES = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                "required": ssl.CERT_REQUIRED}


def _stamp(paths: list[Path]) -> tuple[int, ...]:
    return tuple(p.stat().st_mtime_ns for p in paths)


class ReloadingContext:
    def __init__(self, files: TlsFiles, client_certs: str) -> None:
        self.files = files
        missing = [p for p in (files.server_cert, files.server_key, files.ca_cert)
                   if not p.exists()]
        if missing:
            raise PkiError(f"TLS is on but {', '.join(map(str, missing))} missing: "
                           "run 'appliance certs init'")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.maximum_version = ssl.TLSVersion.TLSv1_3
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
        context.verify_mode = VERIFY_MODES[client_certs]
        if client_certs != "off":
            context.load_verify_locations(cafile=str(files.ca_cert))
        self.context = context
        self._watched = [files.server_cert, files.server_key]
        self._stamp = self._load()
        self.reloads = 0

    def _load(self) -> tuple[int, ...]:
        stamp = _stamp(self._watched)
        self.context.load_cert_chain(str(self.files.server_cert), str(self.files.server_key))
        return stamp

    def reload_if_changed(self) -> bool:
        try:
            if _stamp(self._watched) == self._stamp:
                return False
            self._stamp = self._load()
        except (OSError, ssl.SSLError) as exc:
            # Half-rotated (key written, certificate not yet) or broken: keep serving the old
            # pair and try again on the next round.
            log.warning("TLS certificate reload deferred: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.server_cert)
        return True

    async def watch(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.reload_if_changed()


def client_context(ca_file: Path, cert: Path | None = None, key: Path | None = None
                   ) -> ssl.SSLContext:
    """What a client of the box uses: trust the box's CA, TLS 1.3, optional client cert."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
