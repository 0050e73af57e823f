"""Server TLS: version 1.3 only, optional or required client certificates, hot reload.

One ``ssl.SSLContext`` serves HTTPS, WSS and MQTTS. Loading a new chain into a live context
affects the handshakes that follow, so rotating the certificate files (``appliance certs
renew``) needs no restart: :meth:`ReloadingContext.watch` looks for changed files.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.security.access import log_refusal
from appliance.security.pki import PkiError, TlsFiles

log = logging.getLogger(__name__)

VERIFY_MODES = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                "required": ssl.CERT_REQUIRED}


def _stamp(paths: list[Path]) -> tuple[int, ...]:
    return tuple(p.stat().st_mtime_ns for p in paths)


TLS_RECORD_TYPES = frozenset(range(20, 25))  # change_cipher_spec .. heartbeat
FATAL = 2
# OpenSSL's record content types and alert codes, as CPython's ssl module enumerates them for
# the message callback (private names, which typeshed does not declare).
CONTENT_TYPES: Any = getattr(ssl, "_TLSContentType")  # noqa: B009
ALERT_TYPES: Any = getattr(ssl, "_TLSAlertType")  # noqa: B009
Refused = Callable[[str, str, str, str], None]


class HandshakeWatcher:
    """Logs refused handshakes, which the event loop drops silently: a plain-text client on a
    TLS port (its first record is not TLS), and every fatal alert the box sends (a TLS 1.2
    client gets ``protocol_version``; a missing or foreign client certificate its own).

    Uses ``SSLContext._msg_callback``, CPython's (undocumented) hook on OpenSSL's message
    callback, the only place these failures are visible; it sees no peer address.
    """

    def __init__(self) -> None:
        self.on_refused: Refused = log_refusal

    def __call__(self, conn: object, direction: str, version: object, content_type: int,
                 msg_type: int, data: bytes) -> None:
        try:
            if content_type == CONTENT_TYPES.HEADER:
                if direction == "read" and data and data[0] not in TLS_RECORD_TYPES:
                    preview = data[:5].decode("ascii", "replace")
                    self.on_refused("tls", "?", "not_tls",
                                    f"plain text ({preview!r}...) on a TLS port")
            elif (content_type == CONTENT_TYPES.ALERT and direction == "write"
                  and len(data) == 2 and data[0] == FATAL):
                alert = ALERT_TYPES(data[1]).name.lower()
                self.on_refused("tls", "?", "handshake", f"TLS alert {alert} sent")
        except Exception:  # a logging hook must never break a handshake
            log.debug("TLS message callback failed", exc_info=True)


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
        self.watcher = HandshakeWatcher()
        if hasattr(context, "_msg_callback"):
            context._msg_callback = self.watcher
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
