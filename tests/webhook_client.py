"""A platform's side of the generic signed webhook: add an integration with the CLI, then POST
to it signed with the shared secret (or not, to be refused)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from appliance.security.signing import hmac_headers
from tests.conftest import Appliance
from tests.security.conftest import cli


def add_integration(box: Appliance, name: str, *extra: str) -> bytes:
    done = cli(box, "webhook", "add", name, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().encode()


def post(box: Appliance, name: str, body: dict[str, Any], headers: dict[str, str]
         ) -> httpx.Response:
    raw = json.dumps(body).encode()
    return httpx.post(f"{box.base_url}/v1/webhooks/{name}", content=raw, timeout=60,
                      verify=box.verify, headers={"Content-Type": "application/json", **headers})


def signed_post(box: Appliance, name: str, secret: bytes, body: dict[str, Any],
                **kwargs: Any) -> httpx.Response:
    return post(box, name, body, hmac_headers(secret, json.dumps(body).encode(), **kwargs))
