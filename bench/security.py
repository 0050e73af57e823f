"""What security costs (``make bench-security``).

- Primitives, in process: JWT verification with a cached key (the per-request cost of a bearer
  token), the whole access decision (verification plus the revocation lookup in SQLite), the
  box's Ed25519 reply signature, and a webhook's HMAC check.
- The real gateway, two processes side by side (engine not needed: ``GET /v1/models``): plain
  HTTP without auth, against HTTPS (TLS 1.3) with a bearer token on a kept-alive connection,
  and HTTPS with a new connection (full handshake) per request. Rounds interleave the three,
  so noise hits them alike; the report gives p50s, the added milliseconds and the ratios.

Writes ``security.json``, ``security.md`` and ``security.png``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import Settings, load
from appliance.security.access import Access
from appliance.security.integrations import Integrations
from appliance.security.replay import ReplayGuard
from appliance.security.signing import box_headers, hmac_headers, verify_hmac
from appliance.security.tokens import SigningKeys, TokenVerifier, issue
from appliance.store.db import connect

TARGET_VERIFY_P50_MS = 2.0


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _time(fn: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(samples), "p95_ms": _p(samples, 0.95), "n": n}


def primitives(root: Path, n: int) -> dict[str, dict[str, float]]:
    os.environ["APPLIANCE_PATHS__DATA_DIR"] = str(root)
    try:
        settings = load(root / "none.toml").settings
    finally:
        del os.environ["APPLIANCE_PATHS__DATA_DIR"]
    keys = SigningKeys(root / "secrets" / "jwt")
    keys.create()
    token, _ = issue(keys, sub="bench", scopes=["chat"], ttl_s=3600, issuer="appliance",
                     audience="appliance")
    verifier = TokenVerifier(keys, issuer="appliance", audience="appliance", leeway_s=30,
                             max_bytes=4096)
    access = Access(settings, connect(settings.paths.database))
    guard = ReplayGuard(connect(settings.paths.database))
    secret = Integrations(root / "secrets" / "webhooks").add("bench").encode()
    body = json.dumps({"id": "x", "conversation": "c", "sender": "s", "text": "hello"}).encode()
    verifier.verify(token)  # warm the key cache: the steady state is what requests pay
    return {
        "jwt_verify": _time(lambda: verifier.verify(token), n),
        "access_check": _time(lambda: access.check(token, "chat", channel="bench", peer="-"),
                              n),
        "reply_signature": _time(lambda: box_headers(keys, body), n),
        "webhook_hmac": _time(lambda: verify_hmac(secret, hmac_headers(secret, body), body,
                                                  300, guard, "bench"), n),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gateway(root: Path, secure: bool) -> tuple[subprocess.Popen[bytes], str, dict[str, str],
                                                  ssl.SSLContext | bool]:
    port = _free_port()
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(root),
           "APPLIANCE_CONFIG": str(root / "none.toml"), "APPLIANCE_HTTP__PORT": str(port),
           "APPLIANCE_MQTT__ENABLED": "false",
           "APPLIANCE_SECURITY__AUTH": str(secure).lower(),
           "APPLIANCE_SECURITY__TLS": str(secure).lower()}
    headers: dict[str, str] = {}
    verify: ssl.SSLContext | bool = True
    if secure:
        for args in (["certs", "init"], ["keys", "init"]):
            subprocess.run([sys.executable, "-m", "appliance", *args], env=env, check=True,
                           capture_output=True)
        token = subprocess.run([sys.executable, "-m", "appliance", "token", "issue", "--sub",
                                "bench", "--scope", "chat"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        verify = ssl.create_default_context(cafile=str(root / "secrets/tls/ca.crt"))
    process = subprocess.Popen([sys.executable, "-m", "appliance", "gateway"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"{'https' if secure else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", verify=verify, timeout=2).status_code == 200:
                return process, base, headers, verify
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {'secure' if secure else 'plain'} gateway did not start")


def gateway(root: Path, rounds: int, per_round: int, progress: Progress
            ) -> dict[str, dict[str, float]]:
    plain = _gateway(root / "plain", secure=False)
    secure = _gateway(root / "secure", secure=True)
    samples: dict[str, list[float]] = {"http_no_auth": [], "https_token_keepalive": [],
                                       "https_token_new_connection": []}
    task = progress.add_task("gateway requests", total=rounds * 3)
    try:
        with httpx.Client(verify=plain[3]) as plain_client, \
                httpx.Client(verify=secure[3]) as secure_client:
            for _ in range(rounds):
                for name in samples:
                    for _ in range(per_round):
                        started = time.perf_counter()
                        if name == "http_no_auth":
                            response = plain_client.get(f"{plain[1]}/v1/models")
                        elif name == "https_token_keepalive":
                            response = secure_client.get(f"{secure[1]}/v1/models",
                                                         headers=secure[2])
                        else:
                            response = httpx.get(f"{secure[1]}/v1/models", headers=secure[2],
                                                 verify=secure[3])
                        response.raise_for_status()
                        samples[name].append((time.perf_counter() - started) * 1000)
                    progress.advance(task)
    finally:
        for process, *_ in (plain, secure):
            process.terminate()
            process.wait(10)
    return {name: {"p50_ms": statistics.median(values), "p95_ms": _p(values, 0.95),
                   "n": len(values)} for name, values in samples.items()}


def run(settings: Settings, *, n: int, rounds: int, out: Path, console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-security-") as scratch, \
            Progress(console=console, transient=True) as progress:
        root = Path(scratch)
        progress.add_task("primitives", total=None)
        prims = primitives(root / "primitives", n)
        http = gateway(root, rounds, max(10, n // (rounds * 10)), progress)
    base = http["http_no_auth"]["p50_ms"]
    result = {
        "primitives": prims, "gateway": http,
        "added_ms": {name: round(v["p50_ms"] - base, 3) for name, v in http.items()},
        "ratio_to_plain": {name: round(v["p50_ms"] / base, 2) for name, v in http.items()},
        "target_verify_p50_ms": TARGET_VERIFY_P50_MS,
        "verify_target_met": prims["jwt_verify"]["p50_ms"] < TARGET_VERIFY_P50_MS,
    }
    table = Table("what", "p50 ms", "p95 ms", title="Security costs")
    for group in (prims, http):
        for name, value in group.items():
            table.add_row(name, f"{value['p50_ms']:.3f}", f"{value['p95_ms']:.3f}")
    console.print(table)
    console.print(f"HTTPS + token vs plain HTTP (p50 ratio): {result['ratio_to_plain']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    lines = ["# Security costs", "", "| what | p50 ms | p95 ms |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['p50_ms']:.3f} | {v['p95_ms']:.3f} |"
              for group in (prims, http) for k, v in group.items()]
    lines += ["", f"Ratios to plain HTTP (same run, interleaved): {result['ratio_to_plain']}",
              "", f"![chart]({out.stem}.png)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(result, out.with_suffix(".png"))
    console.print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    prims = result["primitives"]
    left.barh(list(prims), [v["p50_ms"] for v in prims.values()])
    left.axvline(result["target_verify_p50_ms"], color="red", linestyle="--",
                 label="verify target")
    left.set_xlabel("p50 ms")
    left.set_title("per-request primitives")
    left.legend()
    http = result["gateway"]
    right.barh(list(http), [v["p50_ms"] for v in http.values()])
    right.set_xlabel("p50 ms per GET /v1/models")
    right.set_title("gateway: plain vs TLS 1.3 + token")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
