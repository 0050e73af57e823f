"""What the box and its services look like right now, as flat ``{name: value}`` samples.

- the box: CPU, memory, pressure stall information (``/proc/pressure``), disk, network
  interfaces (pyroute2, per interface and summed), temperatures, and the GPU/NPU counters
  the kernel exposes in sysfs where present;
- the services: RSS and CPU of each process (pid files in the run directory), the
  supervisor's restarts, hangs and failures (``supervisor.json``);
- the gateway's own Prometheus metrics (scraped and parsed): requests, errors, time to first
  token, tokens/s, queue depth, MQTT clients, refused credentials; counters become rates.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from appliance.rundir import RunDir
from selfheal.state_file import read_states
from selfheal.states import ProcessState

log = logging.getLogger(__name__)
PSI_RESOURCES = ("cpu", "memory", "io")
SERVICES = ("engine", "gateway")
SYSFS_DRM = Path("/sys/class/drm")
SYSFS_ACCEL = Path("/sys/class/accel")


def read_psi(resource: str, root: Path = Path("/proc/pressure")) -> dict[str, float]:
    """``some``/``full`` avg10 of one resource; empty where the kernel has no PSI."""
    try:
        text = (root / resource).read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        values = dict(f.split("=", 1) for f in fields)
        found[f"{kind}_avg10"] = float(values.get("avg10", 0.0))
    return found


class Rates:
    """Turns monotonically increasing counters into per-second rates between samples."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, name: str, value: float, now: float) -> float | None:
        previous = self._last.get(name)
        self._last[name] = (now, value)
        if previous is None or now <= previous[0] or value < previous[1]:
            return None  # first sample, or the counter restarted with its process
        return (value - previous[1]) / (now - previous[0])


class BoxCollector:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.rates = Rates()
        psutil.cpu_percent(interval=None)  # primes the CPU counter

    def sample(self, now: float) -> dict[str, float]:
        values: dict[str, float] = {"box.cpu_pct": psutil.cpu_percent(interval=None)}
        memory = psutil.virtual_memory()
        values["box.mem_available_pct"] = 100.0 * memory.available / memory.total
        values["box.mem_used_mb"] = (memory.total - memory.available) / 2**20
        for resource in PSI_RESOURCES:
            for key, value in read_psi(resource).items():
                values[f"box.psi_{resource.replace('memory', 'mem')}_{key}"] = value
        disk = psutil.disk_usage(str(self.data_dir))
        values["box.disk_used_pct"] = disk.percent
        values.update(self._network(now))
        values.update(self._temperatures())
        values.update(self._accelerators())
        return values

    def _network(self, now: float) -> dict[str, float]:
        from pyroute2 import IPRoute

        values: dict[str, float] = {}
        rx_total = tx_total = 0.0
        try:
            with IPRoute() as ipr:
                links = ipr.get_links()
        except OSError as exc:
            log.debug("no netlink: %s", exc)
            return values
        for link in links:
            name = link.get_attr("IFLA_IFNAME")
            stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
            if not name or not stats or name == "lo":
                continue
            values[f"net.{name}.up"] = 1.0 if link["flags"] & 1 else 0.0
            for direction in ("rx", "tx"):
                rate = self.rates.rate(f"{name}.{direction}", float(stats[f"{direction}_bytes"]),
                                       now)
                if rate is not None:
                    values[f"net.{name}.{direction}_bytes_per_s"] = rate
                    if direction == "rx":
                        rx_total += rate
                    else:
                        tx_total += rate
            errors = float(stats.get("rx_errors", 0)) + float(stats.get("tx_errors", 0))
            values[f"net.{name}.errors"] = errors
        values["box.net_rx_bytes_per_s"] = rx_total
        values["box.net_tx_bytes_per_s"] = tx_total
        return values

    @staticmethod
    def _temperatures() -> dict[str, float]:
        reader = getattr(psutil, "sensors_temperatures", None)
        readings = reader() if reader else {}
        temps = [t.current for entries in readings.values() for t in entries if t.current]
        return {"box.temp_max_c": max(temps)} if temps else {}

    @staticmethod
    def _accelerators() -> dict[str, float]:
        """Intel GPU frequency (i915/xe) and NPU busy time (intel_vpu), when present."""
        values: dict[str, float] = {}
        for card in sorted(SYSFS_DRM.glob("card[0-9]")):
            for name in ("gt_act_freq_mhz", "gt_cur_freq_mhz"):
                path = card / name
                if path.exists():
                    values[f"gpu.{card.name}.freq_mhz"] = float(path.read_text())
                    break
        for device in sorted(SYSFS_ACCEL.glob("accel[0-9]")):
            busy = device / "device" / "npu_busy_time_us"
            if busy.exists():
                values[f"npu.{device.name}.busy_us"] = float(busy.read_text())
        return values


class ServiceCollector:
    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._processes: dict[str, psutil.Process] = {}

    def _process(self, name: str, pid: int) -> psutil.Process:
        known = self._processes.get(name)
        if known is None or known.pid != pid:
            known = psutil.Process(pid)
            known.cpu_percent(interval=None)
            self._processes[name] = known
        return known

    def sample(self, own_pid: int) -> dict[str, float]:
        values: dict[str, float] = {}
        pids = {"ops": own_pid}
        for name in SERVICES:
            try:
                pids[name] = int(self.run.pidfile(name).read_text())
            except (OSError, ValueError):
                continue
        for name, pid in pids.items():
            try:
                process = self._process(name, pid)
                values[f"{name}.rss_mb"] = process.memory_info().rss / 2**20
                values[f"{name}.cpu_pct"] = process.cpu_percent(interval=None)
                values[f"{name}.started"] = process.create_time()
                values[f"{name}.up"] = 1.0
            except psutil.Error:
                values[f"{name}.up"] = 0.0
        values.update(self._supervisor())
        return values

    def _supervisor(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, child in read_states(self.run.supervisor_state).items():
            values[f"supervisor.{name}.restarts"] = float(child.restarts)
            values[f"supervisor.{name}.hangs"] = float(child.hangs)
            values[f"supervisor.{name}.failed"] = float(child.state is ProcessState.FAILED)
        return values


class GatewayScraper:
    """The gateway's /metrics, with a short-lived token of scope ``metrics`` when auth is on."""

    def __init__(self, url: str, verify: Any, token: Any) -> None:
        self.url = url
        self.client = httpx.Client(verify=verify, timeout=5)
        self.token = token  # a callable returning a current bearer token, or None
        self.rates = Rates()
        self._ttft_last: dict[float, float] = {}

    def sample(self, now: float) -> dict[str, float]:
        headers = {"Authorization": f"Bearer {self.token()}"} if self.token else {}
        try:
            response = self.client.get(self.url, headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("gateway metrics unavailable: %s", exc)
            return {"gateway.scrape_ok": 0.0}
        return {"gateway.scrape_ok": 1.0, **self._parse(response.text, now)}

    def _parse(self, text: str, now: float) -> dict[str, float]:
        totals: dict[str, float] = {}
        values: dict[str, float] = {}
        ttft_buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if name == "appliance_http_requests_total":
                    totals["requests"] = totals.get("requests", 0.0) + value
                    if labels.get("status", "").startswith("5"):
                        totals["errors"] = totals.get("errors", 0.0) + value
                elif name == "appliance_chat_completion_tokens_total":
                    totals["tokens"] = value
                elif name == "appliance_auth_refusals_total":
                    totals["refusals"] = totals.get("refusals", 0.0) + value
                elif name == "appliance_chat_rejected_total":
                    totals["rejected"] = totals.get("rejected", 0.0) + value
                elif name == "appliance_engine_queue_depth":
                    values[f"engine.{labels.get('state', 'active')}"] = value
                elif name == "appliance_mqtt_clients":
                    values["mqtt.clients"] = value
                elif name == "appliance_engine_up":
                    values["engine.ready"] = value
                elif name == "appliance_chat_time_to_first_token_seconds_bucket":
                    bound = float(labels["le"])
                    ttft_buckets[bound] = value
        totals.setdefault("errors", 0.0)
        for key, metric in (("requests", "gateway.requests_per_s"),
                            ("errors", "gateway.errors_per_s"),
                            ("tokens", "engine.tokens_per_s"),
                            ("refusals", "gateway.auth_refusals_per_s"),
                            ("rejected", "gateway.rejected_per_s")):
            if key in totals:
                rate = self.rates.rate(key, totals[key], now)
                if rate is not None:
                    values[metric] = rate
        p50 = self._ttft_p50(ttft_buckets)
        if p50 is not None:
            values["gateway.ttft_p50_s"] = p50
        return values

    def _ttft_p50(self, buckets: dict[float, float]) -> float | None:
        """Median time to first token of the requests since the last scrape (from the
        histogram's bucket deltas); None when there were none."""
        deltas = {b: v - self._ttft_last.get(b, 0.0) for b, v in buckets.items()}
        self._ttft_last = buckets
        total = deltas.get(float("inf"), 0.0)
        if total <= 0:
            return None
        for bound in sorted(deltas):
            if deltas[bound] >= total / 2:
                return bound if bound != float("inf") else max(b for b in deltas
                                                                if b != float("inf"))
        return None


def sample_all(box: BoxCollector, services: ServiceCollector, gateway: GatewayScraper | None,
               own_pid: int) -> dict[str, float]:
    now = time.time()
    values = box.sample(now)
    values.update(services.sample(own_pid))
    if gateway is not None:
        values.update(gateway.sample(now))
    return values
