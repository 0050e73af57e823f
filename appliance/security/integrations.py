"""Webhook integrations (IM platforms, chat bridges): a name, a shared secret, and where the
box calls back with replies. One 0600 JSON file each in ``secrets/webhooks``; managed with
``appliance webhook add|list|remove``, read by the gateway as they change."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from appliance.security.files import write_secret

SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Integration:
    name: str
    secret: bytes
    callback_url: str


class Integrations:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path | None:
        return self.root / f"{name}.json" if SAFE_NAME.match(name) else None

    def add(self, name: str, callback_url: str = "") -> str:
        path = self._path(name)
        if path is None:
            raise ValueError(f"integration name {name!r}: use 1-64 of a-z 0-9 _ -")
        if callback_url and not callback_url.startswith(("http://", "https://")):
            raise ValueError("the callback URL must be http:// or https://")
        secret = secrets.token_urlsafe(32)
        write_secret(path, json.dumps({"secret": secret, "callback_url": callback_url}).encode())
        return secret

    def get(self, name: str) -> Integration | None:
        path = self._path(name)
        if path is None or not path.exists():
            return None
        data = json.loads(path.read_text())
        return Integration(name, data["secret"].encode(), data.get("callback_url", ""))

    def remove(self, name: str) -> bool:
        path = self._path(name)
        if path is None or not path.exists():
            return False
        path.unlink()
        return True

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.exists() else []
