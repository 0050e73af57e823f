"""Skills benchmark (``make bench-skills``): how often a tool call is valid, with the grammar
and without it.

The same requests go to the model twice, in one run and interleaved: once constrained by the
grammar the gateway writes (``appliance.gateway.chat.tools``, ``appliance.engine.grammar``),
once unconstrained with the same prompt (the peer: what the model writes when only told the
format). A call is valid when it parses as JSON, names one of the request's tools and its
arguments validate against that tool's schema; a ``json_schema`` answer when it parses and
validates. Sampling at temperature 0.7 with a seed per sample, so both arms see the same
seeds. Generation runs on the OpenVINO pipeline in this process (what the engine runs), so the
figures are the model's, not the network's. The intent router's figures (``bench/intents.py``)
join the same report.

Writes ``skills.json``, ``skills.md`` and ``skills.png`` beside each other.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import jsonschema
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import Settings
from appliance.devices import plan_devices
from appliance.engine.loader import available_devices, build_pipeline, prepare_model
from appliance.gateway.chat import tools
from appliance.gateway.chat.protocol import ChatCompletionRequest
from bench.intents import run_intents

TARGET_VALID_WITH_GRAMMAR = 1.0
TEMPERATURE = 0.7
MAX_TOKENS = 200
BATCH = 8

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 1, "maxLength": 60},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
APPOINTMENT = {"type": "object", "properties": {
    "date": {"type": "string", "maxLength": 20},
    "topic": {"type": "string", "enum": ["loan", "account", "card"]}},
    "required": ["date", "topic"], "additionalProperties": False}
CONVERT = {"type": "object", "properties": {
    "amount": {"type": "number"}, "from": {"type": "string", "enum": ["EUR", "USD", "CNY"]},
    "to": {"type": "string", "enum": ["EUR", "USD", "CNY"]}},
    "required": ["amount", "from", "to"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": name, "description": about,
                                           "parameters": schema}}
         for name, about, schema in (
             ("get_weather", "The weather forecast for a city", WEATHER),
             ("book_appointment", "Book an appointment at the branch", APPOINTMENT),
             ("convert_currency", "Convert an amount between currencies", CONVERT))]
ANSWER = {"type": "object", "properties": {
    "answer": {"type": "string", "maxLength": 120},
    "confidence": {"type": "number"}},
    "required": ["answer", "confidence"], "additionalProperties": False}
CASES: dict[str, dict[str, Any]] = {
    "tool call, required (en)": {"messages": [
        {"role": "user", "content": "What will the weather be in Paris tomorrow?"}],
        "tools": TOOLS, "tool_choice": "required"},
    "tool call, required (zh)": {"messages": [
        {"role": "user", "content": "帮我把100欧元换成人民币"}],
        "tools": TOOLS, "tool_choice": "required"},
    "tool call, named": {"messages": [
        {"role": "user", "content": "I need to talk to someone about my card next Monday."}],
        "tools": TOOLS, "tool_choice": {"type": "function",
                                        "function": {"name": "book_appointment"}}},
    "json_schema answer": {"messages": [
        {"role": "user", "content": "What is the capital of France?"}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": ANSWER,
                                            "strict": True}}},
}


def valid(case: dict[str, Any], text: str) -> bool:
    """Whether ``text`` is what the request asked for (see the module docstring)."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if "response_format" in case:
        schema = case["response_format"]["json_schema"]["schema"]
        return _validates(value, schema)
    if not isinstance(value, dict):
        return False
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in case["tools"]}
    choice = case.get("tool_choice")
    if isinstance(choice, dict) and value.get("name") != choice["function"]["name"]:
        return False
    return value.get("name") in schemas and _validates(value.get("arguments"),
                                                        schemas[value["name"]])


def _validates(value: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def _prompt(tokenizer: Any, case: dict[str, Any]) -> tuple[str, str | None]:
    request = ChatCompletionRequest.model_validate({"model": "bench", **case})
    plan = tools.plan(request)
    chat = [m.model_dump() for m in tools.messages(request, plan.note)]
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True), plan.grammar


def _generate(pipeline: Any, prompt: str, grammar: str | None, seeds: list[int]
              ) -> tuple[list[str], float]:
    import openvino_genai as og

    configs = []
    for seed in seeds:
        config = pipeline.get_config()
        config.max_new_tokens = MAX_TOKENS
        config.do_sample = True
        config.temperature = TEMPERATURE
        config.top_p = 1.0
        config.rng_seed = seed
        if grammar is not None:
            config.structured_output_config = og.StructuredOutputConfig(grammar=grammar)
        configs.append(config)
    started = time.perf_counter()
    results = pipeline.generate([prompt] * len(seeds), configs)
    wall = time.perf_counter() - started
    return [str(r.m_generation_ids[0]).strip() for r in results], wall


def run(settings: Settings, samples: int, out: Path, console: Console) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    entry, _ = prepare_model(settings)
    candidate = plan_devices(available_devices(), settings.engine.device, entry.traits()).chosen
    pipeline = build_pipeline(settings, entry, candidate)
    tokenizer = pipeline.get_tokenizer()
    arms = ("grammar", "unconstrained")
    figures: dict[str, dict[str, Any]] = {}
    examples: dict[str, dict[str, str]] = {}
    batches = [list(range(i, min(i + BATCH, samples))) for i in range(0, samples, BATCH)]
    with Progress(console=console) as progress:
        task = progress.add_task("tool calls", total=len(CASES) * len(batches) * len(arms))
        for name, case in CASES.items():
            prompt, grammar = _prompt(tokenizer, case)
            counts = {arm: 0 for arm in arms}
            seconds: dict[str, list[float]] = {arm: [] for arm in arms}
            for seeds in batches:
                for arm in arms:  # interleaved: drift on a shared machine hits both
                    texts, wall = _generate(pipeline, prompt,
                                            grammar if arm == "grammar" else None, seeds)
                    counts[arm] += sum(valid(case, t) for t in texts)
                    seconds[arm].append(wall / len(seeds))
                    examples.setdefault(name, {}).setdefault(arm, texts[0][:300])
                    progress.advance(task)
            figures[name] = {arm: {"valid": counts[arm], "samples": samples,
                                   "rate": counts[arm] / samples,
                                   "s_per_call": statistics.median(seconds[arm])}
                             for arm in arms}
    result = {"model": entry.id, "device": candidate.device, "temperature": TEMPERATURE,
              "max_tokens": MAX_TOKENS, "samples": samples, "cases": figures,
              "examples": examples, "intent": run_intents(settings),
              "targets": {"valid_with_grammar": TARGET_VALID_WITH_GRAMMAR},
              "met": {"valid_with_grammar": all(
                  f["grammar"]["rate"] >= TARGET_VALID_WITH_GRAMMAR
                  for f in figures.values())},
              "time": time.time()}
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    _report(result, out, console)
    _plot(result, out.with_suffix(".png"))
    return result


def _report(result: dict[str, Any], out: Path, console: Console) -> None:
    table = Table(title=f"Tool-call validity, {result['model']} on {result['device']}, "
                  f"temperature {result['temperature']}, {result['samples']} samples each")
    for column in ("case", "with grammar", "unconstrained", "s/call grammar",
                   "s/call unconstrained"):
        table.add_column(column)
    lines = ["# Skills benchmark", "",
             f"{result['model']} on {result['device']}, temperature {result['temperature']}, "
             f"{result['samples']} samples per case and arm, max {result['max_tokens']} tokens.",
             "", "| case | valid with grammar | valid unconstrained | s/call grammar | "
             "s/call unconstrained |", "| --- | --- | --- | --- | --- |"]
    for name, figures in result["cases"].items():
        cells = [f"{figures[a]['valid']}/{figures[a]['samples']} ({figures[a]['rate']:.0%})"
                 for a in ("grammar", "unconstrained")]
        times = [f"{figures[a]['s_per_call']:.2f}" for a in ("grammar", "unconstrained")]
        table.add_row(name, *cells, *times)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {times[0]} | {times[1]} |")
    console.print(table)
    met = result["met"]["valid_with_grammar"]
    console.print(f"every constrained answer valid: {'[green]yes' if met else '[red]no'}")
    lines += ["", f"Every constrained answer valid: {'yes' if met else 'no'}.", ""]
    lines += _intent_report(result["intent"], console)
    out.with_suffix(".md").write_text("\n".join(lines))


def _intent_report(intent: dict[str, Any], console: Console) -> list[str]:
    if "error" in intent:
        console.print(f"[red]intent routing not measured: {intent['error']}")
        return [f"Intent routing not measured: {intent['error']}.", ""]
    table = Table(title=f"Intent routing of held-out phrasings (min confidence "
                  f"{intent['min_confidence']})")
    for column in ("router", "all", "en", "zh", "route p50 ms", "route p95 ms", "train s"):
        table.add_column(column)
    lines = ["## Intent routing", "",
             f"Held-out phrasings ({intent['held_out']}) routed to the right skill or to chat, "
             f"min confidence {intent['min_confidence']}; target "
             f"{intent['target_accuracy']:.0%}.", "",
             "| router | all | en | zh | route p50 ms | route p95 ms | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, figures in intent["arms"].items():
        cells = [f"{figures['right']}/{figures['total']} ({figures['accuracy']:.1%})",
                 f"{figures['by_language']['en']:.1%}", f"{figures['by_language']['zh']:.1%}",
                 f"{figures['route_ms']['p50']:.1f}", f"{figures['route_ms']['p95']:.1f}",
                 f"{figures['train_s']:.2f}"]
        table.add_row(arm, *cells)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    console.print(table)
    console.print(f"accuracy with meaning / characters alone: {intent['ratio_accuracy']:.2f}; "
                  f"target met: {'[green]yes' if intent['met'] else '[red]no'}")
    misses = intent["arms"]["meaning+characters"]["misses"]
    lines += ["", f"Accuracy with the embedding model / characters alone: "
              f"{intent['ratio_accuracy']:.2f}. Target met: {'yes' if intent['met'] else 'no'}.",
              "", "Misses: " + ("; ".join(f"{m['text']} ({m['want']} -> {m['got']})"
                                          for m in misses) or "none"), ""]
    return lines


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["cases"])
    intent = result["intent"]
    fig, (ax, routing) = plt.subplots(1, 2, figsize=(13, 4),
                                      gridspec_kw={"width_ratios": [3, 2]})
    width = 0.38
    for offset, arm in ((-width / 2, "grammar"), (width / 2, "unconstrained")):
        ax.bar([i + offset for i in range(len(names))],
               [100 * result["cases"][n][arm]["rate"] for n in names], width, label=arm)
    ax.set_xticks(range(len(names)), names, rotation=12, fontsize=8)
    ax.set_ylabel("valid answers, %")
    ax.set_ylim(0, 105)
    ax.set_title(f"Tool-call validity, {result['model']}, temperature {result['temperature']}")
    ax.legend()
    if "arms" in intent:
        labels = list(next(iter(intent["arms"].values()))["by_label"])
        for offset, arm in ((-width / 2, "meaning+characters"), (width / 2, "characters")):
            by = intent["arms"][arm]["by_label"]
            routing.bar([i + offset for i in range(len(labels))],
                        [100 * sum(c["right"] for c in by[label].values())
                         / sum(c["total"] for c in by[label].values()) for label in labels],
                        width, label=arm)
        routing.set_xticks(range(len(labels)), labels)
        routing.set_ylim(0, 105)
        routing.set_ylabel("held-out phrasings routed right, %")
        routing.set_title("Intent routing")
        routing.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
