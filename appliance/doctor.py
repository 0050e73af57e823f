"""``appliance doctor``: what this box has, what the engine would choose, and what is risky.

Read-only: it probes devices and files but loads no model, so it is safe on a running box.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psutil

from appliance.config import LoadedSettings
from appliance.devices import plan_devices, plan_embedding_devices
from appliance.engine.loader import available_devices
from appliance.models import registry
from appliance.models.default import DefaultModelMissing, link_default_model
from appliance.security.audit import audit
from appliance.system import accelerators
from appliance.system.clock import clock_warning, read_clock


@dataclass
class Finding:
    level: Literal["error", "warning", "info"]
    message: str


@dataclass
class Report:
    config_file: str
    config_file_exists: bool
    devices: list[dict[str, str]] = field(default_factory=list)
    accelerators: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    integrations: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _device_names(devices: list[str]) -> list[dict[str, str]]:
    import openvino as ov

    core = ov.Core()
    found = []
    for device in devices:
        try:
            name = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except Exception:
            name = "?"
        found.append({"device": device, "name": name})
    return found


def _dir_size(path: Any) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def examine(loaded: LoadedSettings) -> Report:
    settings = loaded.settings
    report = Report(str(loaded.path), loaded.file_exists)
    add = report.findings.append

    devices = available_devices()
    report.devices = _device_names(devices)
    found = accelerators.probe()
    report.accelerators = asdict(found)
    for level, message in accelerators.advice(found, devices):
        add(Finding(level, message))
    memory = psutil.virtual_memory()
    report.memory = {"total_bytes": memory.total, "available_bytes": memory.available}

    models_dir = settings.paths.models_dir
    try:
        link_default_model(models_dir)
    except DefaultModelMissing as exc:
        add(Finding("error", str(exc)))
    except OSError as exc:
        add(Finding("error", f"cannot write the models directory {models_dir}: {exc}"))
    entries = registry.scan(models_dir)
    report.models = [
        {"id": e.id, "format": e.facts.format, "quantization": e.facts.quantization,
         "size_bytes": e.size_bytes, "context_length": e.facts.context_length,
         "prepared": e.prepared, "path": str(e.source)}
        for e in entries
    ]
    entry = next((e for e in entries if e.id == settings.engine.model), None)
    if entry is None:
        add(Finding("error", f"engine.model={settings.engine.model!r} is not in {models_dir}"))
    else:
        plan = plan_devices(devices, settings.engine.device, entry.traits(),
                            settings.engine.npu_max_prompt_len,
                            settings.engine.npu_min_response_len)
        chosen = plan.chosen
        report.plan = {
            "setting": plan.setting, "chosen": chosen.device, "pipeline": chosen.pipeline,
            "reason": chosen.reason, "max_prompt_tokens": chosen.max_prompt_tokens,
            "fallbacks": [c.device for c in plan.candidates[1:]],
            "rejected": [{"device": d, "why": w} for d, w in plan.rejected],
        }
        if plan.setting != "auto" and chosen.device.split(".")[0] != plan.setting.split(".")[0]:
            add(Finding("warning", f"engine.device={plan.setting} cannot be used here; the "
                                   f"engine will fall back to {chosen.device}"))
        if not entry.prepared:
            add(Finding("info", f"{entry.id} is not converted yet; the first engine start "
                                "converts it (run `appliance models prepare` to do it now)"))

    _embedding(report, settings, devices)
    _integrations(report, settings)
    count, size = _dir_size(settings.paths.cache_dir)
    report.cache = {"path": str(settings.paths.cache_dir), "files": count, "bytes": size,
                    "warm": count > 0}
    if count == 0:
        add(Finding("info", "the compiled-model cache is empty; the first start compiles"))

    kv_bytes = settings.engine.kv_cache_gb * 2**30
    if kv_bytes > memory.available * 0.8:
        add(Finding("error", f"engine.kv_cache_gb={settings.engine.kv_cache_gb} does not fit in "
                             f"the {memory.available / 2**30:.1f} GiB of available memory"))
    warning = clock_warning(read_clock(), settings.time)
    if warning:
        add(Finding("warning", warning))
    _skills(report, settings)
    _plugins(report, settings)
    for finding in audit(settings):
        add(Finding(finding.level, finding.message))
    if not loaded.file_exists:
        add(Finding("info", f"no configuration file at {loaded.path}; using defaults"))
    return report


def _embedding(report: Report, settings: Any, devices: list[str]) -> None:
    """The embedding model (the knowledge base and /v1/embeddings): prepared, and where."""
    from appliance.models.embedding import EmbeddingModelMissing, prepared

    model_id = settings.kb.embedding_model
    if not model_id:
        report.findings.append(Finding("info", "kb.embedding_model is '': the knowledge base "
                                               "and /v1/embeddings are off"))
        return
    plan = plan_embedding_devices(devices, settings.kb.embedding_device)
    try:
        facts = prepared(settings.paths.models_dir, model_id)
    except EmbeddingModelMissing as exc:
        report.findings.append(Finding("error", str(exc)))
        return
    report.embedding = {
        "model": model_id, "prepared": facts is not None,
        "dimensions": facts.dimensions if facts else None,
        "setting": settings.kb.embedding_device, "chosen": plan[0].device,
        "reason": plan[0].reason, "fallbacks": [c.device for c in plan[1:]],
    }
    if facts is None:
        report.findings.append(Finding(
            "warning", f"the embedding model {model_id} is not converted: run `appliance models "
                       "prepare` (the knowledge base stays off until it is)"))


def _plugins(report: Report, settings: Any) -> None:
    """Installed plugins run only where the sandbox starts and a keyring vouches for them;
    a plugin waiting for approval is the operator's to decide."""
    from appliance.plugins.package import PluginRefused
    from appliance.plugins.registry import PluginRegistry, plugin_keyring, plugins_root
    from appliance.plugins.sandbox import sandbox_problem

    if not settings.plugins.enabled:
        return
    add = report.findings.append
    try:
        records = PluginRegistry(plugins_root(settings)).list()
    except PluginRefused as exc:
        add(Finding("error", f"plugins: {exc}"))
        return
    problem = sandbox_problem(settings.plugins.sandbox, settings.plugins.python)
    if problem is not None:
        add(Finding("error" if any(r.installed for r in records) else "info",
                    f"plugins: {problem}"))
    if records:
        try:
            plugin_keyring(settings)
        except PluginRefused as exc:
            add(Finding("error", f"plugins: {exc}; none of them runs"))
    for record in records:
        if record.pending is not None:
            add(Finding("warning", f"plugin {record.name} {record.pending.version} waits for "
                                   f"approval; it asks for: {', '.join(record.pending.asks)} "
                                   f"(appliance plugins approve {record.name})"))


def _skills(report: Report, settings: Any) -> None:
    """The files the skills read: a mistake in one keeps the last good facts in use, or calc
    without rates, which the admin should hear about before a customer does."""
    from appliance.skills.branch import BranchFile
    from appliance.skills.calc import RatesError, load_rates
    from appliance.skills.router import branch_path, rates_path

    if not settings.skills.enabled:
        return
    branch = BranchFile(branch_path(settings))
    facts = branch.current()
    if branch.error:
        report.findings.append(Finding("warning", f"branch facts: {branch.error}"))
    elif not facts.hours:
        report.findings.append(Finding(
            "info", f"no opening hours in {branch.path}: the hours skill hands questions to "
                    "the assistant (appliance skills branch FILE)"))
    try:
        load_rates(rates_path(settings))
    except RatesError as exc:
        report.findings.append(Finding("warning", str(exc)))
    if not settings.skills.handoff_url:
        report.findings.append(Finding(
            "info", "skills.handoff_url is not set: handoff tells people to ask at the counter"))


def _integrations(report: Report, settings: Any) -> None:
    """Each IM integration's last success and error, and the replies waiting for it: a
    platform that stopped taking replies shows here before anyone complains."""
    import time

    from appliance.store.db import connect
    from appliance.store.im_integrations import ImIntegrations
    from appliance.store.outbox import EXPIRED, PENDING, Outbox

    if not settings.paths.database.exists():
        return
    connection = connect(settings.paths.database, settings.store.synchronous)
    try:
        waiting = Outbox(connection).by_integration()
        rows = ImIntegrations(connection).health()
    finally:
        connection.close()

    def when(at: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))

    for row in rows:
        counts = waiting.get(row["name"], {PENDING: 0, EXPIRED: 0})
        row |= {"pending": counts[PENDING], "expired": counts[EXPIRED]}
        report.integrations.append(row)
        name = f"IM integration {row['name']} ({row['platform']})"
        if row["last_error_at"] and (row["last_ok"] or 0) < row["last_error_at"]:
            report.findings.append(Finding(
                "warning", f"{name}: the last send failed at {when(row['last_error_at'])}: "
                           f"{row['last_error']}; {row['pending']} parts waiting"))
        elif row["last_ok"] is None:
            report.findings.append(Finding("info", f"{name} has sent nothing yet"))
        if row["expired"]:
            report.findings.append(Finding(
                "warning", f"{name}: {row['expired']} reply parts were given up undelivered "
                           "(`appliance messages show` has their errors)"))
