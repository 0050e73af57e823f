"""Instant-messaging integrations: which platform account an endpoint
``/v1/im/{platform}/{name}`` speaks for, with its ids and secrets sealed at rest, and the
platform's last success and error (``appliance doctor`` shows them)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import IM_INTEGRATIONS

PLATFORMS = ("wecom", "dingtalk", "feishu", "telegram", "slack")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class BadIntegration(ValueError):
    pass


@dataclass(frozen=True)
class ImIntegration:
    name: str
    platform: str
    config: dict[str, Any]
    created: float
    last_ok: float | None
    last_error: str
    last_error_at: float | None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the secrets' values."""
        hidden = {k: "(set)" if v else "" for k, v in self.config.items()
                  if any(word in k for word in ("secret", "token", "key", "password"))}
        return {"name": self.name, "platform": self.platform, **self.config, **hidden,
                "created": self.created, "last_ok": self.last_ok,
                "last_error": self.last_error, "last_error_at": self.last_error_at}


class ImIntegrations:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def add(self, name: str, platform: str, config: dict[str, Any]) -> ImIntegration:
        if not NAME.match(name):
            raise BadIntegration(f"{name!r} is not an integration name: lowercase letters, "
                                 "digits, '_' and '-', at most 64")
        if platform not in PLATFORMS:
            raise BadIntegration(f"unknown platform {platform!r}; one of {', '.join(PLATFORMS)}")
        key = {"name": name, "platform": platform}
        sealed = IM_INTEGRATIONS.seal(self._sealer, key, {"config": json.dumps(config)},
                                      self._sealer.active_kid)
        try:
            self.db.execute("INSERT INTO im_integrations(name, platform, config, created, kid) "
                            "VALUES (?,?,?,?,?)", (name, platform, sealed["config"], time.time(),
                                                   sealed["kid"]))
        except sqlite3.IntegrityError:
            raise BadIntegration(f"an integration named {name!r} exists; remove it first"
                                 ) from None
        found = self.get(name)
        assert found is not None
        return found

    def get(self, name: str, platform: str | None = None) -> ImIntegration | None:
        row = self.db.execute("SELECT * FROM im_integrations WHERE name=?", (name,)).fetchone()
        if row is None or (platform is not None and row["platform"] != platform):
            return None
        config = json.loads(IM_INTEGRATIONS.open(self._sealer, row)["config"])
        return ImIntegration(row["name"], row["platform"], config, row["created"],
                             row["last_ok"], row["last_error"], row["last_error_at"])

    def all(self) -> list[ImIntegration]:
        names = [r[0] for r in self.db.execute("SELECT name FROM im_integrations ORDER BY name")]
        return [i for i in (self.get(n) for n in names) if i is not None]

    def health(self) -> list[dict[str, Any]]:
        """Each integration's last success and error, read without opening its secrets."""
        rows = self.db.execute("SELECT name, platform, last_ok, last_error, last_error_at "
                               "FROM im_integrations ORDER BY name")
        return [dict(row) for row in rows]

    def remove(self, name: str) -> bool:
        return self.db.execute("DELETE FROM im_integrations WHERE name=?", (name,)).rowcount > 0

    def succeeded(self, name: str) -> None:
        self.db.execute("UPDATE im_integrations SET last_ok=? WHERE name=?", (time.time(), name))

    def failed(self, name: str, error: str) -> None:
        self.db.execute("UPDATE im_integrations SET last_error=?, last_error_at=? WHERE name=?",
                        (error[:500], time.time(), name))
