"""The security half of ``appliance doctor``: what an auditor would flag on this box.

Each finding is an error (doctor exits non-zero) unless it is only advice.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.config import Settings
from appliance.security.exposure import exposed_listeners, exposure_problems
from appliance.security.files import loose_permissions
from appliance.security.pki import inspect, tls_files

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


@dataclass(frozen=True)
class SecurityFinding:
    level: Literal["error", "warning", "info"]
    message: str


Add = Callable[["SecurityFinding"], None]


def audit(settings: Settings) -> list[SecurityFinding]:
    found: list[SecurityFinding] = []
    add = found.append
    security = settings.security
    for problem in exposure_problems(settings):
        add(SecurityFinding("error", problem))
    exposed = exposed_listeners(settings)
    if security.insecure_expose_without_tls_or_auth and exposed:
        add(SecurityFinding("error", "security.insecure_expose_without_tls_or_auth is on and "
                            f"{', '.join(exposed)} listen beyond loopback"))
    if not security.auth:
        add(SecurityFinding("warning", "security.auth is off: anyone who can reach a listener "
                            "can use the box"))
    if not security.encrypt_at_rest:
        add(SecurityFinding("warning", "security.encrypt_at_rest is off: message text is "
                            "stored in clear"))
    if exposed and security.tls and security.client_certs == "off":
        add(SecurityFinding("info", "client certificates are off; tokens alone authenticate"))
    _check_files(settings, add)
    if security.tls:
        _check_certificates(settings, add)
    return found


def _check_files(settings: Settings, add: Add) -> None:
    secrets = settings.paths.secrets_dir
    if secrets.exists():
        problem = loose_permissions(secrets)
        if problem:
            add(SecurityFinding("error", problem))
        for path in sorted(secrets.rglob("*")):
            if path.is_file() and path.suffix != ".crt":
                problem = loose_permissions(path)
                if problem:
                    add(SecurityFinding("error", problem))
    for path in (settings.paths.database, settings.paths.data_dir):
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o002:
            add(SecurityFinding("error", f"{path} is world-writable"))
    database = settings.paths.database
    keys_file = secrets / "data.keys"
    if database.exists() and not keys_file.exists() and _sealed_rows(database):
        add(SecurityFinding("error", f"{database} holds encrypted records but {keys_file} is "
                            "missing: restore it from the backup taken with the database"))
    if database.exists() and stat.S_IMODE(database.stat().st_mode) & 0o004:
        add(SecurityFinding("warning", f"{database} is world-readable (metadata and "
                            "conversation ids are not encrypted)"))


def _sealed_rows(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages WHERE kid != ''").fetchone()[0])
    except sqlite3.Error:  # an old schema or an empty file: nothing sealed to lose
        return 0


def _check_certificates(settings: Settings, add: Add) -> None:
    files = tls_files(settings.paths.secrets_dir)
    for path in (files.ca_cert, files.server_cert):
        if not path.exists():
            add(SecurityFinding("error", f"security.tls is on but {path} is missing "
                                "(appliance certs init)"))
            continue
        info = inspect(path)
        days = info.days_left()
        if days < 0:
            add(SecurityFinding("error", f"{path} expired {-days:.0f} days ago"))
        elif days < settings.security.cert_warn_days:
            add(SecurityFinding("error", f"{path} expires in {days:.0f} days "
                                "(appliance certs renew)"))
        weak = (info.key_type.startswith("RSA") and info.key_bits < MIN_RSA_BITS) or (
            info.key_type.startswith("EllipticCurve") and info.key_bits < MIN_EC_BITS)
        if weak:
            add(SecurityFinding("error", f"{path} has a weak {info.key_type} key "
                                f"({info.key_bits} bits)"))
