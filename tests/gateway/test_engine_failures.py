"""The engine dies, fills up or loses its client: the gateway stays up and says so clearly."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import MODEL, Appliance
from tests.polling import until

pytestmark = pytest.mark.e2e
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


def api(appliance: Appliance) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused", max_retries=0,
                         timeout=120)


def engine_load(appliance: Appliance) -> dict[str, int]:
    return httpx.get(f"{appliance.base_url}/readyz", timeout=5).json()["load"]


def test_sigkill_of_the_engine_mid_stream_is_survived(
        start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance()
    old_pid = appliance.engine_pid()
    stream = api(appliance).chat.completions.create(model=MODEL, messages=LONG, stream=True,
                                                    max_tokens=2000)
    received = ""
    with pytest.raises(openai.APIError, match="engine went away"):
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
            if len(received) > 40 and old_pid:
                os.kill(old_pid, signal.SIGKILL)
                old_pid = 0
    assert received  # it was really streaming when the engine died

    assert httpx.get(f"{appliance.base_url}/healthz").status_code == 200
    ready = httpx.get(f"{appliance.base_url}/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    refused = httpx.post(f"{appliance.base_url}/v1/chat/completions",
                         json={"model": MODEL, "messages": LONG}, timeout=30)
    if refused.status_code != 200:  # unless the engine was already back
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "engine_unavailable"
        assert int(refused.headers["retry-after"]) > 0

    until(lambda: httpx.get(f"{appliance.base_url}/readyz").status_code == 200)
    assert appliance.engine_pid() != old_pid
    reply = api(appliance).chat.completions.create(
        model=MODEL, temperature=0, messages=[{"role": "user", "content": "What is 2 + 2?"}])
    assert reply.choices[0].message.content
    metrics = httpx.get(f"{appliance.base_url}/metrics").text
    assert "appliance_engine_restarts_total 1.0" in metrics


def test_a_full_admission_queue_answers_429_with_retry_after(
        start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance(APPLIANCE_ENGINE__MAX_CONCURRENT="1",
                                APPLIANCE_ENGINE__MAX_WAITING="0")
    stream = api(appliance).chat.completions.create(model=MODEL, messages=LONG, stream=True,
                                                    max_tokens=1000)
    next(iter(stream))  # the one slot is taken
    started = time.monotonic()
    refused = httpx.post(f"{appliance.base_url}/v1/chat/completions",
                         json={"model": MODEL, "messages": LONG}, timeout=30)
    assert time.monotonic() - started < 10  # refused at once, not queued
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "engine_overloaded"
    assert int(refused.headers["retry-after"]) > 0
    stream.close()


def test_a_client_that_disconnects_mid_stream_frees_its_engine_slot(appliance: Appliance) -> None:
    until(lambda: engine_load(appliance)["active"] == 0, timeout=60)  # others' work done
    stream = api(appliance).chat.completions.create(model=MODEL, messages=LONG, stream=True,
                                                    max_tokens=4000)
    next(iter(stream))
    until(lambda: engine_load(appliance)["active"] >= 1, timeout=10)
    stream.close()
    until(lambda: engine_load(appliance)["active"] == 0, timeout=30)


def test_a_non_streaming_client_that_hangs_up_frees_its_engine_slot(appliance: Appliance) -> None:
    def impatient() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{appliance.base_url}/v1/chat/completions", timeout=2,
                       json={"model": MODEL, "messages": LONG, "max_tokens": 4000})

    until(lambda: engine_load(appliance)["active"] == 0, timeout=60)  # others' work done
    thread = threading.Thread(target=impatient)
    thread.start()
    until(lambda: engine_load(appliance)["active"] >= 1, timeout=10)
    thread.join()
    until(lambda: engine_load(appliance)["active"] == 0, timeout=30)


def test_metrics_report_requests_latency_ttft_tokens_and_queue(appliance: Appliance) -> None:
    api(appliance).chat.completions.create(model=MODEL, max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
    text = httpx.get(f"{appliance.base_url}/metrics").text
    for name in ("appliance_http_requests_total", "appliance_http_request_duration_seconds_bucket",
                 "appliance_chat_time_to_first_token_seconds_count",
                 "appliance_chat_completion_tokens_total", "appliance_engine_queue_depth",
                 "appliance_engine_restarts_total", "appliance_engine_up 1.0"):
        assert name in text
    assert 'route="/v1/chat/completions",status="200"' in text
