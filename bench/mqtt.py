"""MQTT benchmark (``make bench-mqtt``).

- Broker throughput: one paho publisher and one paho subscriber, 64-byte messages, QoS 0 and
  QoS 1, against the appliance's broker (``ApplianceBroker`` with its plugins, in a process of
  its own) and, when Debian's ``mosquitto`` is installed, against mosquitto in the same run with
  the same clients. Reported as messages/s and as the ratio to mosquitto.
- Pipeline latency: a device sends ``/help`` (a skill, no LLM) through the running appliance
  and waits for the reply: end-to-end p50/p95 and, from the store's own timestamps, the time
  from ``received`` to ``answered`` inside the pipeline.

Writes ``mqtt.json``, ``mqtt.md`` and ``mqtt.png``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import Settings

PAYLOAD = b"x" * 64
TOPIC = "bench/throughput"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def serve_broker(port: int) -> None:
    """The appliance's broker alone, as the gateway configures it (``python -m bench.mqtt``)."""
    import uvloop

    from appliance.config import MqttSettings
    from appliance.gateway.mqtt.bridge import broker_config
    from appliance.gateway.mqtt.broker import ApplianceBroker

    async def main() -> None:
        settings = Settings(mqtt=MqttSettings(host="127.0.0.1", port=port, ws_port=0))
        broker = ApplianceBroker(broker_config(settings),
                                 offline_queue_max=settings.mqtt.offline_queue_max)
        await broker.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await broker.shutdown()

    uvloop.run(main())


def throughput(port: int, qos: int, count: int) -> float:
    """Messages per second from first publish to last receipt."""
    done = threading.Event()
    received = 0
    first_sent = 0.0
    last_received = 0.0

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal received, last_received
        received += 1
        last_received = time.perf_counter()
        if received >= count:
            done.set()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", port)
    subscriber.subscribe(TOPIC, qos)
    subscriber.loop_start()
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    publisher.max_inflight_messages_set(100)
    publisher.max_queued_messages_set(0)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    time.sleep(0.5)
    first_sent = time.perf_counter()
    for _ in range(count):
        publisher.publish(TOPIC, PAYLOAD, qos=qos)
    finished = done.wait(timeout=120)
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    if not finished:
        return received / 120
    return count / (last_received - first_sent)


def pipeline_latency(port: int, http_base: str, count: int) -> dict[str, float]:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    device_id = f"bench-{os.getpid()}"
    replies: dict[str, float] = {}
    arrived = threading.Condition()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        event = json.loads(message.payload)
        with arrived:
            replies[event["id"]] = time.perf_counter()
            arrived.notify_all()

    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
    device.on_message = on_message
    device.connect("127.0.0.1", port)
    device.subscribe(f"appliance/v1/res/{device_id}/reply", 1)
    device.loop_start()
    time.sleep(0.5)
    latencies = []
    run = int(time.time())
    for index in range(count):
        message_id = f"b{run}-{index}"
        sent = time.perf_counter()
        device.publish(f"appliance/v1/req/{device_id}",
                       json.dumps({"id": message_id, "text": "/help"}), qos=1)
        with arrived:
            arrived.wait_for(partial(operator.contains, replies, message_id), timeout=10)
        if message_id in replies:
            latencies.append(replies[message_id] - sent)
    device.disconnect()
    device.loop_stop()
    inside = []
    for index in range(count):
        trace = httpx.get(f"{http_base}/v1/conversations/{device_id}/messages/b{run}-{index}"
                          ).json()["transitions"]
        times = {t["state"]: t["at"] for t in trace}
        if "received" in times and "answered" in times:
            inside.append(times["answered"] - times["received"])
    ordered = sorted(latencies)
    return {
        "requests": count,
        "end_to_end_p50_ms": round(1000 * statistics.median(ordered), 2),
        "end_to_end_p95_ms": round(1000 * ordered[int(len(ordered) * 0.95) - 1], 2),
        "pipeline_p50_ms": round(1000 * statistics.median(inside), 2),
        "pipeline_p95_ms": round(1000 * sorted(inside)[int(len(inside) * 0.95) - 1], 2),
    }


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def run(settings: Settings, count: int, rounds: int, out: Path, console: Console) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    brokers: dict[str, list[str]] = {}
    ours_port = _free_port()
    brokers["appliance (amqtt)"] = [sys.executable, "-m", "bench.mqtt", "--serve",
                                    str(ours_port)]
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    mosquitto_port = _free_port()
    if mosquitto:
        conf = Path(tempfile.mkdtemp(prefix="bench-mosquitto-")) / "mosquitto.conf"
        # max_queued_messages 0: mosquitto's default (1000) silently drops under this load
        conf.write_text(f"listener {mosquitto_port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 0\n")
        brokers["mosquitto"] = [mosquitto, "-c", str(conf)]
    ports = {"appliance (amqtt)": ours_port, "mosquitto": mosquitto_port}
    samples: dict[str, dict[int, list[float]]] = {name: {0: [], 1: []} for name in brokers}
    with Progress(console=console) as progress:
        task = progress.add_task("brokers", total=rounds * len(brokers) * 2 + 1)
        processes = {name: _start(argv) for name, argv in brokers.items()}
        try:
            for name in brokers:
                _wait_port(ports[name])
            for round_no in range(1, rounds + 1):
                for name in brokers:
                    for qos in (0, 1):
                        progress.update(task, description=f"round {round_no}: {name} QoS {qos}")
                        samples[name][qos].append(round(throughput(ports[name], qos, count), 1))
                        progress.advance(task)
        finally:
            for process in processes.values():
                _stop(process)

        progress.update(task, description="pipeline latency (appliance up)")
        latency = _pipeline_run(settings)
        progress.advance(task)

    medians = {name: {f"qos{q}": statistics.median(v) for q, v in by_qos.items()}
               for name, by_qos in samples.items()}
    result: dict[str, Any] = {"messages": count, "payload_bytes": len(PAYLOAD), "rounds": rounds,
                              "throughput_msg_s": medians, "all_rounds": samples,
                              "pipeline": latency}
    if "mosquitto" in medians:
        # Each round measured both brokers back to back: the median of those paired ratios is
        # the least noisy comparison on a shared machine.
        ours, theirs = samples["appliance (amqtt)"], samples["mosquitto"]
        result["ratio_to_mosquitto"] = {
            f"qos{q}": round(statistics.median(a / b for a, b in zip(ours[q], theirs[q],
                                                                       strict=True)), 3)
            for q in (0, 1)}
        result["targets"] = {
            "throughput_at_least_half_of_mosquitto": all(
                v >= 0.5 for v in result["ratio_to_mosquitto"].values()),
            "pipeline_p50_under_5ms": latency["pipeline_p50_ms"] < 5}
    out.write_text(json.dumps(result, indent=2))
    _report(result, out, console)
    return result


def _pipeline_run(settings: Settings) -> dict[str, float]:
    private = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    for name in ("models", "cache"):
        (private / name).symlink_to(getattr(settings.paths, f"{name}_dir"))
    http_port, mqtt_port = _free_port(), _free_port()
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(private),
           "APPLIANCE_HTTP__PORT": str(http_port), "APPLIANCE_MQTT__PORT": str(mqtt_port),
           "APPLIANCE_MQTT__WS_PORT": "0"}
    appliance = _start([sys.executable, "-m", "appliance", "up"], env)
    try:
        _wait_port(mqtt_port, timeout=120)
        return pipeline_latency(mqtt_port, f"http://127.0.0.1:{http_port}", 200)
    finally:
        _stop(appliance)
        shutil.rmtree(private, ignore_errors=True)


def _report(result: dict[str, Any], out: Path, console: Console) -> None:
    table = Table("broker", "QoS 0 msg/s", "QoS 1 msg/s",
                  title=f"{result['messages']} x {result['payload_bytes']} B, paho publisher "
                        f"and subscriber, median of {result['rounds']}")
    lines = ["# MQTT benchmark", "", "| broker | QoS 0 msg/s | QoS 1 msg/s |",
             "| --- | --- | --- |"]
    for name, medians in result["throughput_msg_s"].items():
        row = (name, f"{medians['qos0']:.0f}", f"{medians['qos1']:.0f}")
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    extra = {k: result[k] for k in ("ratio_to_mosquitto", "pipeline", "targets") if k in result}
    console.print_json(json.dumps(extra))
    lines += ["", "```json", json.dumps(extra, indent=2), "```", "", f"![chart]({out.stem}.png)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    names = list(result["throughput_msg_s"])
    for offset, qos in ((-0.2, "qos0"), (0.2, "qos1")):
        axis.bar([i + offset for i in range(len(names))],
                 [result["throughput_msg_s"][n][qos] for n in names], width=0.4,
                 label=qos.upper().replace("QOS", "QoS "))
    axis.set_xticks(range(len(names)), names)
    axis.set(ylabel="messages/s", title="Broker publish-to-receive throughput")
    axis.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    plt.close(fig)
    console.print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve_broker(int(sys.argv[2]))
