"""TLS 1.3 only, on HTTPS, WSS and MQTTS; certificates rotate without a restart; mutual TLS."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from appliance.security.pki import init_ca, issue_client, issue_server, tls_files
from appliance.security.signing import verify_event
from appliance.security.tls import ReloadingContext, client_context
from tests.conftest import Appliance
from tests.polling import until
from tests.security.conftest import cli, jwks, operator_token


def tls12_only(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def server_serial(port: int, ca: Path) -> int:
    from cryptography import x509

    with handshake(port, client_context(ca)) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("listener", ["https", "mqtts"])
def test_a_tls_1_2_client_fails_the_handshake_and_is_logged(secure_box: Appliance,
                                                             listener: str) -> None:
    port = secure_box.port if listener == "https" else secure_box.mqtt_port
    before = secure_box.full_log().count("TLS alert protocol_version sent")
    with pytest.raises(ssl.SSLError):
        handshake(port, tls12_only(secure_box.ca_file)).close()
    wait_for_log(secure_box, "TLS alert protocol_version sent", before)


@pytest.mark.parametrize("listener", ["https", "mqtts"])
def test_a_tls_1_3_client_negotiates_tls_1_3(secure_box: Appliance, listener: str) -> None:
    port = secure_box.port if listener == "https" else secure_box.mqtt_port
    with handshake(port, client_context(secure_box.ca_file)) as conn:
        assert conn.version() == "TLSv1.3"


def test_plain_http_on_the_tls_port_gets_no_http_answer_and_is_logged(
        secure_box: Appliance) -> None:
    before = secure_box.full_log().count("refused tls from ?: not_tls")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{secure_box.port}/healthz", timeout=10)
    wait_for_log(secure_box, "refused tls from ?: not_tls", before)


def wait_for_log(box: Appliance, line: str, seen_before: int) -> None:
    until(lambda: box.full_log().count(line) > seen_before, f"new {line!r} in the log",
          timeout=10, interval=0.1)


def test_a_renewed_certificate_is_served_without_a_restart(secure_box: Appliance) -> None:
    gateway = secure_box.gateway_pid()
    before = server_serial(secure_box.port, secure_box.ca_file)
    assert cli(secure_box, "certs", "renew").returncode == 0
    until(lambda: server_serial(secure_box.port, secure_box.ca_file) != before,
          "renewed certificate served by the gateway", timeout=15, interval=0.25)
    assert server_serial(secure_box.mqtt_port, secure_box.ca_file) != before
    assert secure_box.gateway_pid() == gateway


def test_a_websocket_without_a_token_is_refused_at_the_handshake(
        secure_box: Appliance) -> None:
    async def attempt() -> None:
        async with websockets.connect(f"wss://127.0.0.1:{secure_box.port}/v1/ws",
                                      ssl=client_context(secure_box.ca_file)):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(attempt())
    assert refused.value.response.status_code == 403


def test_a_websocket_with_a_token_chats_over_tls(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "judy", "chat")

    async def chat() -> dict:
        async with websockets.connect(
                f"wss://127.0.0.1:{secure_box.port}/v1/ws",
                additional_headers={"Authorization": f"Bearer {token}"},
                ssl=client_context(secure_box.ca_file)) as socket_:
            await socket_.send(json.dumps({"type": "message", "id": "w1",
                                           "conversation": "judy-ws", "text": "/help"}))
            while True:
                event = json.loads(await asyncio.wait_for(socket_.recv(), 30))
                if event["type"] in ("reply", "error"):
                    return event

    reply = asyncio.run(chat())
    assert reply["type"] == "reply"
    verify_event(jwks(secure_box), reply)


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS echo server on the appliance's context with client certificates required."""
    files = tls_files(tmp_path)
    init_ca(files)
    issue_server(files, [])
    context = ReloadingContext(files, "required").context
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"hello")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, tmp_path
    stop.set()
    thread.join(5)
    listener.close()


def test_mutual_tls_refuses_a_client_without_a_certificate(
        mtls_server: tuple[int, Path]) -> None:
    port, root = mtls_server
    with pytest.raises((ssl.SSLError, ConnectionError)), \
            handshake(port, client_context(tls_files(root).ca_cert)) as conn:
        conn.recv(5)  # TLS 1.3: the server's refusal arrives with the first read


def test_mutual_tls_accepts_a_client_certificate_from_the_boxs_ca(
        mtls_server: tuple[int, Path]) -> None:
    port, root = mtls_server
    files = tls_files(root)
    cert, key = issue_client(files, "kiosk-1")
    with handshake(port, client_context(files.ca_cert, cert, key)) as conn:
        assert conn.recv(5) == b"hello"


def ws_connect(box: Appliance, token: str) -> Any:
    return websockets.connect(f"wss://127.0.0.1:{box.port}/v1/ws",
                              additional_headers={"Authorization": f"Bearer {token}"},
                              ssl=client_context(box.ca_file))


def test_a_websocket_cannot_listen_in_on_a_conversation_before_it_exists(
        secure_box: Appliance) -> None:
    token = operator_token(secure_box, "mallory-ws", "chat")

    async def resume() -> dict:
        async with ws_connect(secure_box, token) as socket_:
            await socket_.send(json.dumps({"type": "resume", "conversation": "kiosk-future",
                                           "last_seq": 0}))
            return json.loads(await asyncio.wait_for(socket_.recv(), 30))

    event = asyncio.run(resume())
    assert event["type"] == "error" and event["code"] == "unknown_conversation"


def test_a_websocket_is_closed_when_its_token_is_revoked(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "revoked-ws", "chat")

    async def hold() -> int:
        async with ws_connect(secure_box, token) as socket_:
            assert cli(secure_box, "token", "revoke", token).returncode == 0
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(socket_.recv(), 30)
            return closed.value.rcvd.code

    assert asyncio.run(hold()) == 1008
