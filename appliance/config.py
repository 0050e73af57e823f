"""The appliance's one settings object.

Declared once here (typed, with defaults and a description per field); loaded from one TOML
file, then overridden by ``APPLIANCE_<SECTION>__<KEY>`` environment variables. Env beats file
beats default, and :func:`describe` tells for each key which of the three won, so
``appliance config show`` and the docs come from the same declaration.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from appliance.rundir import RunDir

ENV_PREFIX = "APPLIANCE_"
ENV_DELIMITER = "__"
CONFIG_ENV = "APPLIANCE_CONFIG"
BOX_CONFIG_PATH = Path("/etc/appliance/appliance.toml")
DEV_CONFIG_PATH = Path("var/appliance.toml")


class ConfigError(Exception):
    """A configuration problem, phrased for the person who has to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the HTTP gateway binds to.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP gateway.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest accepted request body; bigger gets HTTP 413."
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576,
        description="Largest accepted request header block; bigger gets HTTP 431.")
    stream_interval_ms: int = Field(
        40, ge=0, le=1000,
        description="When busy, a stream's tokens are sent at most this often (0: each token).",
    )
    stream_busy_at: int = Field(
        4, ge=1, description="Generations in the engine from which the gateway counts as busy."
    )


class MqttSettings(_Section):
    enabled: bool = Field(True, description="Run the built-in MQTT broker in the gateway.")
    host: str = Field("127.0.0.1", description="Address the MQTT listeners bind to.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT over TCP.")
    ws_port: int = Field(8083, ge=0, le=65535, description="MQTT over WebSocket; 0 turns it off.")
    max_payload_bytes: int = Field(
        65_536, ge=256, description="Largest request payload; bigger gets an error reply."
    )
    offline_queue_max: int = Field(
        1000, ge=1, description="Messages kept per offline persistent session (oldest dropped)."
    )
    session_expiry_s: int = Field(
        86_400, ge=60, description="A persistent session unused this long is forgotten."
    )


class EngineSettings(_Section):
    device: str = Field(
        "auto",
        description="OpenVINO device: auto (NPU, then GPU, then CPU), CPU, GPU, GPU.<n> or NPU.",
    )
    model: str = Field("smollm2-135m-instruct", description="Id of the model the engine serves.")
    max_concurrent: int = Field(
        8, ge=1, le=256, description="Generations decoded together (continuous batching)."
    )
    max_waiting: int = Field(
        32, ge=0, le=10_000, description="Admission queue beyond max_concurrent; full gets 429."
    )
    kv_cache_gb: int = Field(1, ge=1, le=64, description="KV-cache size in GiB (CPU/GPU).")
    max_batched_tokens: int = Field(
        2048, ge=64, description="Tokens scheduled per engine step (prefill chunking)."
    )
    default_max_tokens: int = Field(
        512, ge=1, description="Completion length when a request sets no max_tokens."
    )
    default_temperature: float = Field(
        0.2, ge=0.0, le=2.0, description="Sampling temperature when a request sets none."
    )
    inference_threads: int = Field(
        0, ge=0, le=1024, description="INFERENCE_NUM_THREADS for CPU; 0 lets OpenVINO decide."
    )
    kv_cache_precision: Literal["", "u8", "f16", "bf16", "f32"] = Field(
        "", description="KV_CACHE_PRECISION; empty keeps the device default."
    )
    request_timeout_s: float = Field(
        300.0, gt=0, description="A generation that produces nothing for this long is aborted."
    )
    max_prompt_tokens: int = Field(
        0, ge=0, description="Cap on a prompt's tokens on any device (0: the device's own "
        "limit); set it to npu_max_prompt_len to see on a CPU how an NPU box fits prompts."
    )
    npu_max_prompt_len: int = Field(
        1024, ge=64, description="NPU compiles static shapes: longest prompt it accepts."
    )
    npu_min_response_len: int = Field(
        128, ge=1, description="NPU static shapes: tokens reserved for the answer."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        from appliance.devices import normalise_device_setting

        return normalise_device_setting(value)


class ChatSettings(_Section):
    history_turns: int = Field(
        32, ge=0, le=200, description="Most earlier question/answer pairs offered to the LLM "
        "with a message; the engine keeps as many of the newest as fit the prompt's budget."
    )
    system_prompt: str = Field(
        "", description="Instructions put first in every chat prompt ('' for none)."
    )
    summary_min_interval_s: float = Field(
        30.0, ge=0, description="Least time between two summary jobs of one conversation."
    )
    summary_retries: int = Field(
        3, ge=0, le=10, description="Attempts a summary job makes before it waits for the "
        "next turn to fall out of the window."
    )
    summary_max_tokens: int = Field(
        96, ge=8, description="Longest summary the model writes in one job."
    )
    summary_max_chars: int = Field(
        2000, ge=200, description="Longest stored summary (the customer's noted statements "
        "and the model's summary together); the oldest notes go first."
    )
    summary_batch_chars: int = Field(
        2400, ge=200, description="Most text of fallen-out turns one summary job reads."
    )
    reply_wait_s: float = Field(
        120.0, gt=0, description="How long POST /v1/messages waits for the reply before 202."
    )
    max_text_chars: int = Field(
        8000, ge=1, description="Longest message text accepted on any channel."
    )


class KnowledgeSettings(_Section):
    embedding_model: str = Field(
        "all-minilm-l6-v2", description="Id of the embedding model the engine serves (in "
        "<models>/embeddings/); '' serves none, and the knowledge base and /v1/embeddings "
        "are off.")
    embedding_device: str = Field(
        "auto", description="OpenVINO device for embeddings: auto (GPU, then CPU; an NPU "
        "is left to the LLM), CPU, GPU, GPU.<n> or NPU.")
    embedding_batch: int = Field(
        16, ge=1, le=256, description="Texts embedded in one call while indexing.")
    chunk_units: int = Field(
        160, ge=32, le=512, description="Size of a document chunk, in approximate tokens "
        "(the embedding model reads 256).")
    chunk_overlap: int = Field(
        32, ge=0, le=256, description="Approximate tokens a chunk repeats from the one "
        "before it, so a fact on a boundary is whole in one of them.")
    max_upload_mb: int = Field(
        50, ge=1, le=4096, description="Largest document accepted; bigger gets HTTP 413.")
    max_pdf_pages: int = Field(2000, ge=1, description="Most pages read from one PDF.")
    passages: int = Field(
        3, ge=0, le=20, description="Chunks put in a chat prompt from the bound collections "
        "(0: the chat pipeline does not retrieve).")
    min_similarity: float = Field(
        0.3, ge=-1.0, le=1.0, description="A chunk goes into a chat prompt when its cosine "
        "similarity to the message reaches this (0.3 keeps a paraphrase, drops \"Hi!\" at "
        "0.14) ...")
    min_similarity_cjk: float = Field(
        0.5, ge=-1.0, le=1.0, description="... or this, for a message in Chinese, Japanese "
        "or Korean: the packaged all-MiniLM-L6-v2 is English-only and scores any two Chinese "
        "texts about 0.4 (lower it with a multilingual embedding model) ...")
    min_score: float = Field(
        0.5, ge=0.0, le=1.0, description="... or, for a chunk the keyword search also "
        "found, its fused score reaches this (1.0: first in both searches; 0.5: first in "
        "one) ...")
    keyword_slack: float = Field(
        0.1, ge=0.0, le=2.0, description="... and its similarity is at most this much below "
        "the threshold, so a keyword match on a common word (\"how are you\") adds no "
        "passages to small talk.")
    candidates: int = Field(
        50, ge=1, le=1000, description="Hits taken from each of the vector and keyword "
        "searches before they are fused.")
    rrf_k: int = Field(
        60, ge=1, description="Reciprocal-rank fusion constant: higher flattens the ranks.")
    default_collections: list[str] = Field(
        default_factory=lambda: ["default"], description="Collections a conversation with "
        "no binding of its own (nor its integration's) retrieves from.")


class SkillsSettings(_Section):
    enabled: bool = Field(
        True, description="Route chat messages to the skills (hours, faq, calc, handoff) "
        "by intent; off: every message that is not a /command is plain chat.")
    min_confidence: float = Field(
        0.4, ge=0.0, le=1.0, description="Least confidence of the intent classifier for a "
        "message to go to a skill; below it, plain chat.")
    meaning_weight: float = Field(
        1.0, ge=0.0, le=10.0, description="Weight of the embedding model's meaning beside "
        "the characters' TF-IDF in the intent classifier (0: characters only).")
    faq_min_similarity: float = Field(
        0.35, ge=0.0, le=1.0, description="Least character similarity of a question to the "
        "nearest FAQ entry for faq to answer it; below it, plain chat answers.")
    branch_file: Path | None = Field(
        None, description="The branch's facts (name, opening hours, FAQ) as TOML, edited by "
        "the admin; unset means <data_dir>/branch.toml. Reread when it changes.")
    rates_file: Path | None = Field(
        None, description="Currency rates for calc as TOML (base = \"CNY\", [rates] USD = "
        "7.1 ...: units of base per unit); unset means <data_dir>/rates.toml.")
    handoff_url: str = Field(
        "", description="Where handoff posts a conversation for staff (a webhook, e.g. an "
        "IM group's robot relay), signed by the box and sent through the outbox; '' tells "
        "the person to ask at the counter instead.")
    handoff_turns: int = Field(
        10, ge=0, le=100, description="Recent question/answer pairs sent with a handoff.")


class PluginsSettings(_Section):
    enabled: bool = Field(
        True, description="Offer the skills of installed, approved and enabled plugins to "
        "the intent router and run them confined; off: installed plugins stay idle.")
    keyring_dir: Path = Field(
        Path("/usr/share/appliance/plugin-keyring"), description="Folder of public keys "
        "(.pub, PEM, Ed25519) trusted to sign plugins; apart from the update keyring, so a "
        "plugin author cannot sign an OS update.")
    dir: Path | None = Field(
        None, description="Installed plugins, their data folders and secrets; unset means "
        "<data_dir>/plugins.")
    sandbox: str = Field(
        "bwrap", description="The bubblewrap binary that confines each plugin process "
        "(its own namespaces, a read-only /usr, no network).")
    python: Path = Field(Path("/usr/bin/python3"),
                         description="The interpreter plugins run with (standard library "
                         "only, plus the box's plugin SDK).")
    run_as_user: str = Field(
        "nobody", description="When the gateway runs as root, plugins run as this user, so "
        "their process limit counts only their own processes.")
    call_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest a plugin may take to answer one call; past "
        "it the plugin is killed and the person gets an error reply.")
    start_timeout_s: float = Field(5.0, gt=0, le=300,
                                   description="Longest a plugin may take to say it is ready.")
    memory_mb: int = Field(256, ge=32, le=8192,
                           description="Address space of each plugin process (RLIMIT_AS).")
    max_processes: int = Field(
        16, ge=1, le=1024, description="Processes and threads a plugin may have at once "
        "(RLIMIT_NPROC, counted for its user); a fork bomb stops there.")
    cpu_s: int = Field(60, ge=1, le=3600,
                       description="CPU seconds one plugin process may use before it is "
                       "killed (RLIMIT_CPU); it is restarted on the next call.")
    restart_backoff_s: float = Field(
        1.0, gt=0, le=60, description="Wait before restarting a plugin that crashed, hung "
        "or broke a rule; doubles with each failure in a row.")
    restart_backoff_max_s: float = Field(60.0, gt=0, le=3600,
                                         description="Longest wait between restarts.")
    fetch_timeout_s: float = Field(10.0, gt=0, le=120,
                                   description="Timeout of a plugin's fetch from a declared "
                                   "host (made by the box on its behalf).")
    fetch_max_bytes: int = Field(1_000_000, ge=1024, le=50_000_000,
                                 description="Largest response body a plugin's fetch returns.")


class ImSettings(_Section):
    wecom_api_base: str = Field("https://qyapi.weixin.qq.com",
                                description="WeCom server API (gettoken, message/send).")
    dingtalk_api_base: str = Field("https://api.dingtalk.com",
                                   description="DingTalk open API (robot messages).")
    feishu_api_base: str = Field("https://open.feishu.cn",
                                 description="Feishu/Lark open API (tokens, message reply).")
    telegram_api_base: str = Field("https://api.telegram.org",
                                   description="Telegram Bot API.")
    slack_api_base: str = Field("https://slack.com/api", description="Slack Web API.")
    signature_window_s: float = Field(
        300.0, gt=0, description="Platform requests signed further from now than this are "
        "refused (a replayed or delayed request).")


class OutboxSettings(_Section):
    retry_initial_s: float = Field(
        1.0, gt=0, description="First wait before a failed reply to a platform is sent again.")
    retry_max_s: float = Field(
        300.0, gt=0, description="Longest wait between two attempts (the backoff's cap).")
    max_age_s: float = Field(
        86_400.0, gt=0, description="A reply not delivered by this age is given up, with an "
        "event (the platform may no longer take it).")
    timeout_s: float = Field(15.0, gt=0, description="Longest one send attempt may take.")
    poll_s: float = Field(
        1.0, gt=0, le=60, description="Longest the sender sleeps with nothing due.")
    batch: int = Field(20, ge=1, le=1000, description="Parts taken per pass.")


class StoreSettings(_Section):
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="SQLite synchronous mode: NORMAL survives process crashes, FULL power loss.",
    )


class PathsSettings(_Section):
    data_dir: Path = Field(
        Path("var"), description="State: models, compiled-model cache, sockets, logs."
    )
    models: Path | None = Field(
        None,
        description="Models directory; unset means <data_dir>/models. The OS image ships its "
        "converted models read-only in /opt/appliance/models, inside each root slot.",
    )

    @property
    def models_dir(self) -> Path:
        return self.models if self.models is not None else self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def run(self) -> RunDir:
        """The files in :attr:`run_dir` that the processes leave for each other."""
        return RunDir(self.run_dir)

    @property
    def log_dir(self) -> Path:
        """Logs of processes that have no journal (``appliance service`` on a plain host)."""
        return self.data_dir / "log"

    @property
    def database(self) -> Path:
        return self.data_dir / "appliance.db"

    @property
    def engine_socket(self) -> Path:
        return self.run.engine_socket

    @property
    def ops_database(self) -> Path:
        """Metric history, events and benchmark results (kept apart from the messages)."""
        return self.data_dir / "ops.db"

    @property
    def secrets_dir(self) -> Path:
        """Keys and certificates: a 0700 directory of 0600 files."""
        return self.data_dir / "secrets"


class OpsSettings(_Section):
    enabled: bool = Field(True, description="Run the ops daemon (metrics, anomalies, benchmarks).")
    interval_s: float = Field(5.0, ge=0.2, le=300, description="Metrics sampling interval.")
    history_hours: float = Field(
        24.0, gt=0, le=24 * 31, description="Metric history kept on the box (SQLite, ops.db).")
    pressure_psi_high: float = Field(
        20.0, ge=0, le=100, description="Memory PSI some avg10 (%) from which load is shed.")
    pressure_available_low_pct: float = Field(
        10.0, ge=0, le=100, description="Available memory (%) under which load is shed.")
    long_prompt_tokens: int = Field(
        1024, ge=16, description="Under pressure, prompts longer than this are refused (503).")
    idle_unload_s: float = Field(
        900.0, ge=0, description="Unload the model after this long without requests (0: never).")
    anomaly_window: int = Field(12, ge=3, le=1000, description="Samples per anomaly window.")
    anomaly_baseline_hours: float = Field(
        6.0, gt=0, description="Rolling baseline the anomaly model is retrained on.")
    anomaly_retrain_s: float = Field(
        3600.0, ge=10, description="How often the anomaly model is retrained.")
    bench_every_s: float = Field(
        21_600.0, ge=0, description="Scheduled benchmark period (0: only after upgrades).")
    bench_on_upgrade: bool = Field(
        True, description="Benchmark once after each new appliance version starts.")
    bench_regression_pct: float = Field(
        25.0, gt=0, description="A benchmark this much worse than the box's median is an event.")
    leak_rss_mb: float = Field(
        2048.0, gt=0, description="A service whose RSS trend crosses this is restarted gently "
        "(the engine's limit adds engine.kv_cache_gb, the cache it fills by design).")
    log_max_mb: float = Field(
        20.0, gt=0, description="The appliance's own log files (<data_dir>/log/*.log) are "
        "rotated past this size.")
    log_keep: int = Field(5, ge=1, le=100, description="Rotated log files kept (gzipped).")
    test_leak_endpoint: bool = Field(
        False, description="TEST ONLY: POST /v1/ops/test/leak makes the gateway hold memory.")


class SecuritySettings(_Section):
    auth: bool = Field(
        True, description="Require a signed token: HTTP/WebSocket bearer, MQTT CONNECT password.")
    tls: bool = Field(
        False, description="Serve HTTPS, WSS and MQTTS only (TLS 1.3), certificates from "
        "appliance certs init.")
    client_certs: Literal["off", "optional", "required"] = Field(
        "optional", description="Mutual TLS: verify client certificates issued by the box's CA.")
    issuer: str = Field("appliance", min_length=1, description="Token issuer (iss) of this box.")
    audience: str = Field("appliance", min_length=1, description="Token audience (aud) accepted.")
    token_max_bytes: int = Field(
        4096, ge=256, le=65_536, description="Longer bearer tokens or passwords are refused.")
    token_leeway_s: int = Field(
        30, ge=0, le=600, description="Clock skew tolerated on exp, iat and nbf.")
    device_token_ttl_s: int = Field(
        90 * 86_400, ge=60, description="Lifetime of a device token obtained by POST /v1/enroll.")
    webhook_window_s: int = Field(
        300, ge=10, le=3600, description="Signed webhook timestamps older or newer are refused.")
    encrypt_at_rest: bool = Field(
        True, description="Encrypt message text and identities in SQLite (AES-256-GCM).")
    cert_reload_s: float = Field(
        5.0, gt=0, description="How often rotated certificate files are looked for.")
    cert_warn_days: int = Field(
        30, ge=1, description="doctor reports certificates expiring within this many days.")
    insecure_expose_without_tls_or_auth: bool = Field(
        False, description="DANGEROUS: allow a non-loopback listener without TLS and auth.")


class SupervisorSettings(_Section):
    backoff_initial_s: float = Field(0.5, gt=0, description="First wait before a restart.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between restarts.")
    stable_after_s: float = Field(
        60.0, gt=0, description="Up this long and the backoff starts again from the beginning."
    )
    stop_timeout_s: float = Field(
        10.0, gt=0, description="Grace after SIGTERM before a child is killed."
    )
    crash_loop_restarts: int = Field(
        5, ge=2, description="This many restarts within crash_loop_window_s is a crash loop.")
    crash_loop_window_s: float = Field(
        120.0, gt=0, description="Window in which restarts count towards a crash loop.")
    escalation_hook: str = Field(
        "", description="Command run once when a service is declared failed (e.g. rollback).")
    crash_loop_cooldown_s: float = Field(
        600.0, ge=0, description="A service failed by a crash loop is started again after "
        "this cool-down, with a fresh count (0: it stays down until an operator acts).")
    probe_interval_s: float = Field(2.0, gt=0, description="Liveness probe period.")
    probe_timeout_s: float = Field(3.0, gt=0, description="A probe slower than this failed.")
    probe_failures: int = Field(
        3, ge=1, description="Consecutive failed probes after which a process is replaced.")
    watchdog_s: float = Field(
        30.0, ge=5, description="systemd watchdog timeout each service asks for at start "
        "(beats the unit's WatchdogSec); a model step that holds the engine longer kills it.")


class UpdateSettings(_Section):
    esp_dir: Path = Field(
        Path("/boot/efi"), description="EFI system partition: systemd-boot, its entries, kernels.")
    slot_a_device: Path = Field(
        Path("/dev/disk/by-partlabel/root-a"), description="Root filesystem of slot a.")
    slot_b_device: Path = Field(
        Path("/dev/disk/by-partlabel/root-b"), description="Root filesystem of slot b.")
    keyring_dir: Path = Field(
        Path("/usr/share/appliance/keyring"),
        description="Folder of public keys (.pub files, PEM, Ed25519) trusted to sign bundles.")
    release_file: Path = Field(
        Path("/usr/lib/appliance/release.json"),
        description="The running image's version and compatible string (JSON).")
    cmdline_file: Path = Field(
        Path("/proc/cmdline"), description="Kernel command line; appliance.slot= names the slot.")
    kernel_options: str = Field(
        "root=PARTLABEL=root-{slot} rw appliance.slot={slot} console=ttyS0,115200 panic=10",
        description="Kernel options of a slot's boot entry ({slot} is a or b).")
    trial_tries: int = Field(
        1, ge=1, le=9, description="Boots a newly installed slot gets before it falls back.")
    health_deadline_s: float = Field(
        300.0, gt=0, description="A trial boot not ready (/readyz) within this is rolled back.")
    reboot_command: str = Field(
        "systemctl reboot", description="Run when a trial boot misses its health deadline.")

    @field_validator("kernel_options")
    @classmethod
    def _names_the_slot(cls, value: str) -> str:
        if "appliance.slot={slot}" not in value:
            raise ValueError("must contain appliance.slot={slot}")
        try:
            value.format(slot="a")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{slot}} may appear in braces ({exc})") from None
        return value


class TimeSettings(_Section):
    """The box's clock: signed tokens, webhook signature windows and TLS all depend on it."""

    ntp_servers: list[str] = Field(
        default_factory=list, description="NTP servers the image's systemd-timesyncd asks "
        "(empty: those DHCP hands out, then the fallback servers).")
    fallback_ntp_servers: list[str] = Field(
        default_factory=lambda: [f"{n}.debian.pool.ntp.org" for n in range(4)],
        description="Asked only when neither ntp_servers nor DHCP name a server "
        "(empty: none, the clock stays unsynchronised and doctor says so).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    kb: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    skills: SkillsSettings = Field(default_factory=SkillsSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    im: ImSettings = Field(default_factory=ImSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    paths: PathsSettings = Field(default_factory=PathsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    time: TimeSettings = Field(default_factory=TimeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; environment variables must beat it.
        return (env_settings, init_settings)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    path: Path
    file_exists: bool
    file_values: Mapping[str, Any]


def config_path(explicit: Path | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """The TOML file to read: --config, then $APPLIANCE_CONFIG, then the box's, then ./var's."""
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    if BOX_CONFIG_PATH.exists():
        return BOX_CONFIG_PATH
    return DEV_CONFIG_PATH


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", ENV_DELIMITER).upper()


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _explain(exc: ValidationError, file_values: Mapping[str, Any], path: Path) -> str:
    flat_file = _flatten(file_values)
    lines = ["invalid configuration:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        name = env_name(key)
        if name in os.environ:
            origin = f"env {name}={os.environ[name]!r}"
        elif key in flat_file:
            origin = f"{path}: {key} = {flat_file[key]!r}"
        else:
            origin = "default"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling)"
        lines.append(f"  {key}: {message} [{origin}]")
    return "\n".join(lines)


def load(explicit_path: Path | None = None) -> LoadedSettings:
    """Read file and environment into a validated Settings, or raise ConfigError."""
    path = config_path(explicit_path)
    file_values = _read_toml(path)
    try:
        settings = Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, file_values, path)) from exc
    settings.paths.data_dir = settings.paths.data_dir.expanduser().resolve()
    return LoadedSettings(settings, path.resolve(), path.exists(), file_values)


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: Any
    source: str
    description: str


def describe(loaded: LoadedSettings) -> Iterator[SettingRow]:
    """Every setting with its effective value and where that value came from."""
    flat_file = _flatten(loaded.file_values)
    settings = loaded.settings
    for section_name in Settings.model_fields:
        section = getattr(settings, section_name)
        for key, field in type(section).model_fields.items():
            dotted = f"{section_name}.{key}"
            name = env_name(dotted)
            if name in os.environ:
                source = f"env {name}"
            elif dotted in flat_file:
                source = f"file {loaded.path}"
            else:
                source = "default"
            yield SettingRow(dotted, getattr(section, key), source, field.description or "")
