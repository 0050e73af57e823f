"""WeCom (企业微信) self-built app, against a fake WeCom API written from WeCom's published
documentation (接收消息与事件, 回调配置 and 加解密方案说明, 获取access_token, 发送应用消息):
the box checks the callback URL, takes encrypted message callbacks (msg_signature over the
Encrypt value, a fresh timestamp, a nonce used once) and answers through message/send.

The events are encrypted by the tests' own implementation of the published scheme
(``wecom_platform``: cryptography's PKCS7 padder with a 256-bit block), not by the adapter's.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from appliance.gateway.im import wecom_crypto
from tests.conftest import Appliance
from tests.gateway.im.fake_platform import FakePlatform
from tests.gateway.im.wecom_platform import (
    AES_KEY,
    AGENT_ID,
    CORP_ID,
    MSG_IDS,
    SECRET,
    TOKEN,
    WeComApi,
    add_integration,
    callback,
    enter_event,
    envelope,
    msg_signature,
    post,
    seal,
    signed_query,
    text_message,
    unseal,
    url,
)
from tests.polling import until

pytestmark = pytest.mark.e2e
# WeCom's published example (加解密方案说明 and its sample code).
SAMPLE_TOKEN = "QDG6eK"
SAMPLE_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SAMPLE_CORP_ID = "wx5823bf96d3bd56c7"
SAMPLE_ECHOSTR = ("P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO"
                  "+FZXvnaqQ==")
SAMPLE_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczc"
    "dCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLj"
    "vd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMn"
    "vw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k"
    "22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2Yoy"
    "yH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")

XXE = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       "<xml><ToUserName>&xxe;</ToUserName>{inner}</xml>")
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";" if i > 1 else "&lol;") * 10}">'
                    for i in range(1, 10))
          + "]><xml><ToUserName>&lol9;</ToUserName>{inner}</xml>")


@pytest.fixture(scope="module")
def api() -> WeComApi:
    return WeComApi()


@pytest.fixture(scope="module")
def fake(api: WeComApi) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    box = start_module_appliance(APPLIANCE_IM__WECOM_API_BASE=fake.base_url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    add_integration(box, tmp_path_factory.mktemp("wecom"))
    return box


def cli(box: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def audited(box: Appliance, reason: str) -> bool:
    return any("im wecom:branch" in line and reason in line
               for line in box.full_log().splitlines())


def still_serving(box: Appliance) -> None:
    assert httpx.get(f"{box.base_url}/healthz", timeout=10).status_code == 200
    assert callback(box, enter_event("ops")).status_code == 200


# -- tests ------------------------------------------------------------------------------------

def test_the_published_sample_verifies() -> None:
    # The URL check of 加解密方案说明 / Sample: GET ?msg_signature=5c45ff5e...&timestamp=
    # 1409659589&nonce=263014780&echostr=P9nAz..., whose plain echostr is 1616140317555161061.
    assert msg_signature(SAMPLE_TOKEN, "1409659589", "263014780", SAMPLE_ECHOSTR) == \
        "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert wecom_crypto.signature(SAMPLE_TOKEN, "1409659589", "263014780", SAMPLE_ECHOSTR) \
        == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    assert wecom_crypto.decrypt(SAMPLE_AES_KEY, SAMPLE_ECHOSTR, SAMPLE_CORP_ID) == \
        "1616140317555161061" == unseal(SAMPLE_ECHOSTR, SAMPLE_AES_KEY)[0]
    # The message of the same sample: POST ?msg_signature=477715d1...&timestamp=1409659813&
    # nonce=1372623149, a text "hello" from mycreate to agent 218.
    assert wecom_crypto.signature(SAMPLE_TOKEN, "1409659813", "1372623149", SAMPLE_ENCRYPT) \
        == "477715d11cdb4164915debcba66cb864d751f3e6"
    event = wecom_crypto.parse_xml(wecom_crypto.decrypt(SAMPLE_AES_KEY, SAMPLE_ENCRYPT,
                                                        SAMPLE_CORP_ID))
    assert (event["FromUserName"], event["MsgType"], event["Content"], event["MsgId"],
            event["AgentID"]) == ("mycreate", "text", "hello", "4561255354251345929", "218")
    with pytest.raises(wecom_crypto.WrongReceiver):
        wecom_crypto.decrypt(SAMPLE_AES_KEY, SAMPLE_ECHOSTR, "wx0000000000000000")
    # and the adapter's encryption is what the scheme decrypts (32-byte blocks)
    for length in (0, 11, 12, 13, 44, 45, 100):
        sealed = wecom_crypto.encrypt(AES_KEY, "长" * length, CORP_ID)
        assert len(base64.b64decode(sealed)) % 32 == 0
        assert unseal(sealed) == ("长" * length, CORP_ID)


def test_the_url_verification_answers_the_plain_echostr(box: Appliance) -> None:
    plain = str(secrets.randbelow(10**19))
    echostr = seal(plain)
    reply = httpx.get(url(box, {**signed_query(echostr), "echostr": echostr}), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.text == plain
    assert reply.headers["content-type"].startswith("text/plain")


def test_a_text_message_is_answered_through_message_send(box: Appliance,
                                                         api: WeComApi) -> None:
    reply = callback(box, text_message("zhangsan", "What is the capital of France?"))
    assert reply.status_code == 200 and reply.content == b""
    until(lambda: api.delivered_to("zhangsan"), timeout=120, what="the message/send call")
    sent = api.delivered_to("zhangsan")
    assert len(sent) == 1
    assert sent[0]["agentid"] == AGENT_ID and sent[0]["msgtype"] == "text"
    assert "Paris" in sent[0]["text"]["content"]


def test_wecoms_retry_of_an_event_gets_no_second_answer(box: Appliance, api: WeComApi) -> None:
    message = text_message("lisi", "/help", msg_id=next(MSG_IDS))
    assert callback(box, message).status_code == 200
    until(lambda: api.delivered_to("lisi"), timeout=120, what="the answer")
    assert callback(box, message).status_code == 200  # a fresh nonce, the same MsgId
    time.sleep(3)
    assert len(api.delivered_to("lisi")) == 1


def test_the_access_token_is_cached(box: Appliance, api: WeComApi) -> None:
    assert callback(box, text_message("zhaoliu", "/help")).status_code == 200
    until(lambda: api.delivered_to("zhaoliu"), timeout=60, what="the first answer")
    fetched = api.token_calls()
    assert callback(box, text_message("zhaoliu", "/status")).status_code == 200
    until(lambda: len(api.delivered_to("zhaoliu")) == 2, timeout=60, what="the second answer")
    assert api.token_calls() == fetched


def test_a_wrong_signature_is_refused_and_audited(box: Appliance) -> None:
    encrypted = seal(text_message("mallory", "hello"))
    query = signed_query(encrypted, token="not-the-token")
    reply = post(box, query, envelope(encrypted))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "bad_signature"
    until(lambda: audited(box, "bad_signature"), timeout=10, what="the audit line")


def test_an_expired_timestamp_is_refused_and_audited(box: Appliance) -> None:
    encrypted = seal(text_message("mallory", "hello"))
    reply = post(box, signed_query(encrypted, timestamp=int(time.time()) - 3600),
                 envelope(encrypted))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "stale"
    until(lambda: audited(box, "stale"), timeout=10, what="the audit line")


def test_a_replayed_nonce_is_refused_and_audited(box: Appliance) -> None:
    encrypted = seal(enter_event("wangwu"))
    query = signed_query(encrypted)
    assert post(box, query, envelope(encrypted)).status_code == 200
    reply = post(box, query, envelope(encrypted))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "replayed"
    until(lambda: audited(box, "replayed"), timeout=10, what="the audit line")


@pytest.mark.parametrize("hostile", [XXE, LAUGHS], ids=["external-entity", "billion-laughs"])
def test_hostile_xml_in_the_body_is_refused(box: Appliance, hostile: str) -> None:
    encrypted = seal(text_message("mallory", "hello"))
    body = hostile.format(inner=f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>")
    reply = post(box, signed_query(encrypted), body)  # even correctly signed
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_xml"
    still_serving(box)


@pytest.mark.parametrize("hostile", [XXE, LAUGHS], ids=["external-entity", "billion-laughs"])
def test_hostile_xml_in_the_decrypted_payload_is_refused(box: Appliance, hostile: str) -> None:
    inner = hostile.format(inner="<MsgType>text</MsgType><Content>hi</Content>"
                                 "<FromUserName>mallory</FromUserName><MsgId>1</MsgId>")
    reply = callback(box, inner)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_xml"
    until(lambda: audited(box, "bad_xml"), timeout=10, what="the audit line")
    still_serving(box)


def test_an_expired_access_token_is_renewed_and_the_message_delivered(
        box: Appliance, api: WeComApi) -> None:
    assert callback(box, text_message("qianqi", "/help")).status_code == 200
    until(lambda: api.delivered_to("qianqi"), timeout=60, what="a token in use")
    fetched = api.token_calls()
    api.expire_next = True
    assert callback(box, text_message("qianqi", "/status")).status_code == 200
    until(lambda: len(api.delivered_to("qianqi")) == 2, timeout=60, what="the answer")
    assert [a["errcode"] for a in api.refused_to("qianqi")] == [42001]
    assert api.token_calls() == fetched + 1


def test_a_reply_is_delivered_after_the_api_comes_back(box: Appliance, api: WeComApi,
                                                      fake: FakePlatform) -> None:
    fake.down()
    try:
        assert callback(box, text_message("sunba", "/help")).status_code == 200
        until(lambda: "attempt" in _trace(box, "wecom-branch-sunba"), timeout=120,
              what="a failed attempt")
    finally:
        fake.up()
    until(lambda: api.delivered_to("sunba"), timeout=60, what="the answer after the API "
          "came back")


def test_a_long_reply_is_split_under_2048_bytes_per_message(box: Appliance,
                                                            api: WeComApi) -> None:
    # An unknown command is answered with its name: a reply of about 4,900 UTF-8 bytes.
    word = "企业微信消息长度按字节计算。" * 115
    assert callback(box, text_message("zhoujiu", f"/{word}")).status_code == 200
    until(lambda: len(api.delivered_to("zhoujiu")) >= 3, timeout=60, what="the parts")
    time.sleep(1)
    parts = [m["text"]["content"] for m in api.delivered_to("zhoujiu")]
    assert all(len(part.encode()) <= 2048 for part in parts), [len(p.encode()) for p in parts]
    assert len(parts) == 3
    assert word in "".join(parts)


def test_im_list_and_the_log_show_no_secret(box: Appliance) -> None:
    listed = cli(box, "im", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert CORP_ID in listed.stdout
    for value in (SECRET, TOKEN, AES_KEY):
        assert value not in listed.stdout and value not in box.full_log()


def _trace(box: Appliance, conversation: str) -> str:
    messages = httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages",
                         timeout=10).json().get("messages", [])
    if not messages:
        return ""
    data = httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages/"
                     f"{messages[-1]['id']}", timeout=10).json()
    return " ".join(t["note"] for t in data.get("transitions", []))
