"""The gateway's Prometheus metrics, in a registry of their own per app instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from appliance.gateway.ops_metrics import OpsMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("appliance_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("appliance_http_request_duration_seconds",
                                 "HTTP request duration (to the last byte)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("appliance_chat_time_to_first_token_seconds",
                              "From request arrival to the first generated text",
                              buckets=TTFT_BUCKETS, registry=r)
        self.completion_tokens = Counter("appliance_chat_completion_tokens_total",
                                         "Tokens generated", registry=r)
        self.prompt_tokens = Counter("appliance_chat_prompt_tokens_total",
                                     "Prompt tokens processed", registry=r)
        self.rejected = Counter("appliance_chat_rejected_total",
                                "Chat requests refused, by reason", ["reason"], registry=r)
        self.queue_depth = Gauge("appliance_engine_queue_depth",
                                 "Generations in the engine, by state", ["state"], registry=r)
        self.engine_up = Gauge("appliance_engine_up", "1 when the engine answers its heartbeat",
                               registry=r)
        self.auth_refusals = Counter("appliance_auth_refusals_total",
                                     "Credentials refused, by channel and reason",
                                     ["channel", "reason"], registry=r)
        self.outbox = Counter("appliance_outbox_attempts_total",
                              "Replies to platforms: parts sent, attempts retried, replies "
                              "given up", ["kind", "outcome"], registry=r)
        self.draining = Gauge("appliance_gateway_draining",
                              "1 while the gateway drains (refuses new chat work)", registry=r)
        self.in_flight = Gauge("appliance_gateway_in_flight",
                               "Chat generations running through the gateway, all channels",
                               registry=r)
        self.mqtt_clients = Gauge("appliance_mqtt_clients", "MQTT clients connected now",
                                  registry=r)
        self.ops = OpsMetrics(r)
        self.plugin_events = Counter("appliance_plugin_events_total",
                                     "Plugin starts and failures (crashed, timeout, denied, "
                                     "error, unavailable), by plugin", ["plugin", "event"],
                                     registry=r)
        self.engine_restarts = Counter("appliance_engine_restarts_total",
                                       "Engine restarts seen by the gateway", registry=r)
