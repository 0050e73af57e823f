"""HTTP attacks on the secured box, each refused with a clear 401/403 JSON error, and logged."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from appliance.security.signing import verify_box
from appliance.security.tokens import SigningKeys, issue
from tests.conftest import MODEL, Appliance
from tests.security.conftest import auth, box_keys, cli, crafted, operator_token

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}


def client(box: Appliance) -> httpx.Client:
    return httpx.Client(base_url=box.base_url, verify=box.verify, timeout=60)


def refused(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_a_valid_chat_token_gets_a_completion(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "alice", "chat")
    with client(secure_box) as http:
        response = http.post("/v1/chat/completions", json=CHAT, headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_the_openai_client_works_over_tls_with_a_token_and_fails_without(
        secure_box: Appliance) -> None:
    token = operator_token(secure_box, "openai-user", "chat")

    def openai_client(api_key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{secure_box.base_url}/v1", api_key=api_key,
                             http_client=httpx.Client(verify=secure_box.verify), max_retries=0)

    reply = openai_client(token).chat.completions.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai_client("sk-not-a-box-token").models.list()


def test_no_token_is_refused_with_a_bearer_challenge(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        response = http.post("/v1/chat/completions", json=CHAT)
    refused(response, 401, "missing")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_refused(secure_box: Appliance) -> None:
    token = crafted(secure_box, now=time.time() - 7200, ttl_s=600)
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth(token)), 401, "expired")


def test_a_token_signed_by_another_key_is_refused(secure_box: Appliance, tmp_path) -> None:
    stranger = SigningKeys(tmp_path / "jwt")
    stranger.create()
    token, _ = issue(stranger, sub="mallory", scopes=["admin"], ttl_s=600,
                     issuer="appliance", audience="appliance")
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth(token)), 401, "unknown_key")


def test_a_token_forged_under_the_boxs_key_id_is_refused(secure_box: Appliance) -> None:
    kid = box_keys(secure_box).active_kid()
    payload = {"iss": "appliance", "aud": "appliance", "sub": "mallory", "scope": "admin",
               "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "x"}
    token = jwt.encode(payload, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                       headers={"kid": kid})
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth(token)), 401, "signature")


def test_an_unsigned_alg_none_token_is_refused(secure_box: Appliance) -> None:
    payload = {"iss": "appliance", "aud": "appliance", "sub": "mallory", "scope": "admin",
               "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "x"}
    token = jwt.encode(payload, None, algorithm="none")
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth(token)), 401, "algorithm")


def test_a_token_for_another_audience_is_refused(secure_box: Appliance) -> None:
    token = crafted(secure_box, audience="some-other-service")
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth(token)), 401, "audience")


def test_a_tampered_payload_is_refused(secure_box: Appliance) -> None:
    header, payload, signature = operator_token(secure_box, "bob", "chat").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with client(secure_box) as http:
        refused(http.get("/metrics", headers=auth(f"{header}.{forged}.{signature}")), 401,
                "signature")


def test_a_one_time_token_cannot_be_replayed(secure_box: Appliance) -> None:
    once = operator_token(secure_box, "sensor-7", "enroll", once=True)
    with client(secure_box) as http:
        first = http.post("/v1/enroll", headers=auth(once))
        assert first.status_code == 200, first.text
        assert first.json()["sub"] == "sensor-7"
        refused(http.post("/v1/enroll", headers=auth(once)), 401, "replayed")


def test_an_enrolled_device_token_works_for_chat(secure_box: Appliance) -> None:
    once = operator_token(secure_box, "sensor-8", "enroll", once=True)
    with client(secure_box) as http:
        device_token = http.post("/v1/enroll", headers=auth(once)).json()["token"]
        assert http.get("/v1/models", headers=auth(device_token)).status_code == 200


def test_a_revoked_token_is_refused(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "lost-laptop", "chat")
    with client(secure_box) as http:
        assert http.get("/v1/models", headers=auth(token)).status_code == 200
        assert cli(secure_box, "token", "revoke", token).returncode == 0
        refused(http.get("/v1/models", headers=auth(token)), 401, "revoked")


def test_a_token_without_the_scope_is_forbidden(secure_box: Appliance) -> None:
    chat_only = operator_token(secure_box, "carol", "chat")
    metrics_only = operator_token(secure_box, "prometheus", "metrics")
    with client(secure_box) as http:
        refused(http.get("/metrics", headers=auth(chat_only)), 403, "scope")
        refused(http.post("/v1/chat/completions", json=CHAT, headers=auth(metrics_only)),
                403, "scope")


def test_an_oversized_token_is_refused(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        refused(http.get("/v1/models", headers=auth("a" * 5000)), 401, "oversized")


def test_an_oversized_header_block_is_refused_with_431(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        response = http.get("/v1/models", headers={"X-Padding": "a" * 20_000})
    refused(response, 431, "headers_too_large")


@pytest.mark.parametrize("path", ["/v1/models/..%2F..%2F..%2Fetc%2Fpasswd",
                                  "/v1/models/../../secrets/jwt/active",
                                  "/v1/webhooks/..%2F..%2Fsecrets%2Fdata",
                                  "/v1/conversations/..%2F..%2Fappliance.db/messages"])
def test_path_traversal_reaches_no_file(secure_box: Appliance, path: str) -> None:
    token = operator_token(secure_box, "dave", "chat")
    with client(secure_box) as http:
        response = http.get(path, headers=auth(token))
    assert response.status_code in (403, 404, 405), response.text
    assert "error" in response.json()
    assert "BEGIN" not in response.text and "SQLite" not in response.text


def test_a_model_name_with_a_path_is_refused(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "erin", "chat")
    with client(secure_box) as http:
        response = http.post("/v1/chat/completions", headers=auth(token),
                             json={**CHAT, "model": "../../../etc/passwd"})
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["param"] == "model"


def test_a_device_cannot_read_another_devices_conversation(secure_box: Appliance) -> None:
    owner = operator_token(secure_box, "frank", "chat")
    other = operator_token(secure_box, "grace", "chat")
    with client(secure_box) as http:
        sent = http.post("/v1/messages", headers=auth(owner),
                         json={"id": "m1", "conversation": "frank-notes", "text": "/help"})
        assert sent.status_code == 200, sent.text
        refused(http.get("/v1/conversations/frank-notes/messages", headers=auth(other)), 403,
                "forbidden")
        refused(http.post("/v1/messages", headers=auth(other),
                          json={"id": "m2", "conversation": "frank-notes", "text": "/help"}),
                403, "forbidden")
        assert http.get("/v1/conversations/frank-notes/messages",
                        headers=auth(owner)).status_code == 200


def test_a_sender_cannot_claim_another_identity(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "heidi", "chat")
    with client(secure_box) as http:
        refused(http.post("/v1/messages", headers=auth(token),
                          json={"id": "m1", "conversation": "heidi-1", "text": "/help",
                                "sender": "the-ceo"}), 403, "forbidden")


def test_replies_carry_the_boxs_signature_verifiable_with_its_jwks(
        secure_box: Appliance) -> None:
    token = operator_token(secure_box, "ivan", "chat")
    with client(secure_box) as http:
        jwks = http.get("/.well-known/jwks.json").json()
        response = http.post("/v1/messages", headers=auth(token),
                             json={"id": "m1", "conversation": "ivan-1", "text": "/help"})
    assert response.status_code == 200
    assert verify_box(jwks, response.headers, response.content) == jwks["keys"][0]["kid"]


def test_refusals_are_logged_and_counted(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        http.get("/v1/models", headers=auth("not-a-jwt"))
        text = http.get("/metrics", headers=auth(operator_token(secure_box, "prom", "metrics")
                                                 )).text
    assert "refused http /v1/models" in secure_box.full_log()
    samples = {(s.labels.get("channel"), s.labels.get("reason")): s.value
               for family in text_string_to_metric_families(text)
               if family.name == "appliance_auth_refusals" for s in family.samples
               if s.name == "appliance_auth_refusals_total"}
    assert samples[("http", "malformed")] >= 1


def test_health_probes_need_no_token(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200


def test_a_conversation_an_admin_started_is_not_open_to_devices(secure_box: Appliance) -> None:
    admin = operator_token(secure_box, "ops", "admin")
    device = operator_token(secure_box, "kiosk-x", "chat")
    with client(secure_box) as http:
        assert http.post("/v1/messages", headers=auth(admin), json={
            "id": "a1", "conversation": "ops-notes", "text": "/help"}).status_code == 200
        refused(http.get("/v1/conversations/ops-notes/messages", headers=auth(device)), 403,
                "forbidden")
        assert http.get("/v1/conversations/ops-notes/messages",
                        headers=auth(admin)).status_code == 200


def test_a_retired_signing_key_stops_its_tokens_without_a_restart(
        secure_box: Appliance) -> None:
    old_kid = box_keys(secure_box).active_kid()
    token = operator_token(secure_box, "legacy", "chat")
    with client(secure_box) as http:
        assert http.get("/v1/models", headers=auth(token)).status_code == 200
        assert cli(secure_box, "keys", "rotate", "--signing").returncode == 0
        assert http.get("/v1/models", headers=auth(token)).status_code == 200  # still valid
        assert cli(secure_box, "keys", "retire", old_kid).returncode == 0
        time.sleep(1.2)  # keys are looked for at most once a second
        refused(http.get("/v1/models", headers=auth(token)), 401, "unknown_key")
        fresh = operator_token(secure_box, "legacy", "chat")
        assert http.get("/v1/models", headers=auth(fresh)).status_code == 200
