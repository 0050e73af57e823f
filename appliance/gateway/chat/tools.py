"""Tool calling and structured output for ``/v1/chat/completions``: what the model is told,
the grammar its answer is held to, and the answer read back as OpenAI's ``tool_calls``.

The default model knows no tool-call format of its own, so every model gets the same one:
the tools are described in a system message, and a call is the compact JSON object
``{"name": ..., "arguments": {...}}``. The grammar (:mod:`appliance.engine.grammar`) makes
that object parse and match the tool's parameter schema: with ``tool_choice`` ``required`` or
a named function the answer must be a call; with ``auto`` it is a call or words that do not
start with ``{``. One call per answer (``parallel_tool_calls`` is accepted; a model may always
make fewer calls than allowed).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from appliance.engine.grammar import UnsupportedSchema, compact, schema_grammar, union_grammar
from appliance.engine.protocol import ChatMessage
from appliance.gateway.chat.protocol import ChatCompletionRequest, NamedToolChoice, Tool
from appliance.gateway.errors import APIError

Mode = Literal["text", "tools", "json"]
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Plan:
    """How one request is generated: the grammar, a system note, and how to read it back."""
    mode: Mode = "text"
    grammar: str | None = None
    note: str | None = None
    must_call: bool = False
    tools: dict[str, Tool] = field(default_factory=dict)


def _check_schema(schema: dict[str, Any], param: str) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise APIError(400, f"{param} is not a valid JSON Schema: {exc.message}", param=param,
                       code="invalid_schema") from None


def _grammar_error(exc: UnsupportedSchema, param: str) -> APIError:
    return APIError(400, f"{param}: {exc}", param=param, code="unsupported_schema")


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "name": {"const": tool.function.name},
        "arguments": tool.function.parameters or ANY_OBJECT},
        "required": ["name", "arguments"]}


def plan(request: ChatCompletionRequest) -> Plan:
    """The plan for a request, or the 400 that says what cannot be done."""
    choice = request.tool_choice
    tools = request.tools or []
    fmt = request.response_format
    wants_json = fmt is not None and fmt.type != "text"
    if choice is not None and not tools and choice != "none":
        raise APIError(400, "tool_choice needs tools", param="tool_choice",
                       code="invalid_value")
    if not tools or choice == "none":
        return _format_plan(request) if wants_json else Plan()
    if wants_json:
        raise APIError(400, "response_format json_object or json_schema cannot be combined "
                       "with tools (unless tool_choice is 'none'); ask for a tool call whose "
                       "parameters are the schema instead", param="response_format",
                       code="unsupported_combination")
    by_name: dict[str, Tool] = {}
    for index, tool in enumerate(tools):
        if tool.function.name in by_name:
            raise APIError(400, f"two tools are named {tool.function.name!r}",
                           param=f"tools[{index}].function.name", code="invalid_value")
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools[{index}].function.parameters")
        by_name[tool.function.name] = tool
    chosen = list(by_name.values())
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in by_name:
            raise APIError(400, f"tool_choice names {choice.function.name!r}, which is not "
                           "among the tools", param="tool_choice.function.name",
                           code="invalid_value")
        chosen = [by_name[choice.function.name]]
    must_call = choice is not None and choice != "auto"
    try:
        grammar = union_grammar([_call_schema(t) for t in chosen],
                                roots=[t.function.parameters or {} for t in chosen],
                                text_alternative=not must_call)
    except UnsupportedSchema as exc:
        raise _grammar_error(exc, "tools") from None
    return Plan("tools", grammar, _tools_note(chosen, must_call), must_call, by_name)


def _format_plan(request: ChatCompletionRequest) -> Plan:
    fmt = request.response_format
    assert fmt is not None
    if fmt.type == "json_object":
        return Plan("json", schema_grammar(ANY_OBJECT), "Answer with one JSON object only.")
    assert fmt.json_schema is not None
    schema = fmt.json_schema.schema_ or ANY_OBJECT
    _check_schema(schema, "response_format.json_schema.schema")
    try:
        grammar = schema_grammar(schema)
    except UnsupportedSchema as exc:
        raise _grammar_error(exc, "response_format.json_schema.schema") from None
    about = f" ({fmt.json_schema.description})" if fmt.json_schema.description else ""
    return Plan("json", grammar, f"Answer with one JSON object{about} matching this JSON "
                f"Schema, and nothing else: {compact(schema)}")


def _tools_note(tools: list[Tool], must_call: bool) -> str:
    listed = "\n".join(compact({"name": t.function.name,
                                "description": t.function.description or "",
                                "parameters": t.function.parameters or ANY_OBJECT})
                       for t in tools)
    how = ('To call a function, answer with only a JSON object {"name": <function name>, '
           '"arguments": {<its parameters>}}.')
    when = " You must call one of them." if must_call else \
        " If none of them helps, answer in words instead."
    return f"You can call these functions:\n{listed}\n{how}{when}"


def messages(request: ChatCompletionRequest, note: str | None) -> list[ChatMessage]:
    """The conversation in the engine's three roles: a call the assistant made is written
    the way the model is asked to write one, a tool's result is a user turn that says so."""
    out: list[ChatMessage] = []
    for index, message in enumerate(request.messages):
        text = message.text()
        if message.role == "user" and not text.strip():
            raise APIError(400, f"messages[{index}].content is empty",
                           param=f"messages[{index}].content", code="empty_message")
        if message.role == "tool":
            out.append(ChatMessage(role="user", content=f"Result of the function call "
                                   f"{message.tool_call_id}: {text}"))
            continue
        if message.role == "assistant" and message.tool_calls:
            calls = "\n".join(_written_call(c.function.name, c.function.arguments)
                              for c in message.tool_calls)
            out.append(ChatMessage(role="assistant", content=(text + "\n" + calls).strip()))
            continue
        role = "system" if message.role == "developer" else message.role
        out.append(ChatMessage(role=role, content=text))
    if note:
        if out and out[0].role == "system":
            out[0] = ChatMessage(role="system", content=f"{out[0].content}\n\n{note}")
        else:
            out.insert(0, ChatMessage(role="system", content=note))
    return out


def _written_call(name: str, arguments: str) -> str:
    try:
        parsed: Any = json.loads(arguments)
    except ValueError:
        parsed = arguments
    return compact({"name": name, "arguments": parsed})


def tool_calls(plan: Plan, text: str) -> list[dict[str, Any]] | None:
    """The answer as OpenAI's ``tool_calls``, or None when it is words (or was cut short)."""
    if plan.mode != "tools" or not text.startswith("{"):
        return None
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or call.get("name") not in plan.tools:
        return None
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call["name"],
                          "arguments": compact(call.get("arguments", {}))}}]
