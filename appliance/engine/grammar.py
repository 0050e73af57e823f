"""A JSON Schema as a grammar for constrained generation (OpenVINO GenAI's structured output,
EBNF in xgrammar's dialect): what the model writes is compact JSON that matches the schema.

OpenVINO GenAI takes a JSON Schema itself, but its grammar lets the model put any whitespace
between tokens, and a 135M model at temperature 0.7 then writes newlines until ``max_tokens``
cuts the object short (1 in 20 on a two-field call, measured). This grammar has no optional
whitespace at all, and keeps the schema's own property order.

Enforced: ``type`` (one or a list), ``enum``, ``const``, ``properties`` / ``required`` (other
keys are never written), ``items``, ``prefixItems``, ``minItems`` / ``maxItems``,
``minLength`` / ``maxLength``, ``anyOf`` / ``oneOf``, local ``$ref`` into ``$defs`` /
``definitions``. Not enforced (the value is still of the right type): ``pattern``, ``format``,
numeric bounds. Refused: anything else that changes what is valid (``allOf``, ``not``,
``if``), and a schema nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 24
MAX_REPEAT = 1000
REFUSED = ("allOf", "not", "if", "then", "else", "patternProperties", "dependentSchemas",
           "dependentRequired", "propertyNames", "unevaluatedProperties", "contains")

BASE_RULES = {
    "char": r'[^"\\\x00-\x1f] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4}',
    "string": r'"\"" char* "\""',
    "integer": r'"-"? ("0" | [1-9] [0-9]{0,17})',
    "number": r'integer ("." [0-9]{1,17})? ([eE] [+\-]? [0-9]{1,3})?',
    "boolean": r'"true" | "false"',
    "null": r'"null"',
    "value": 'object | array | string | number | boolean | null',
    "object": r'"{" (string ":" value ("," string ":" value)*)? "}"',
    "array": r'"[" (value ("," value)*)? "]"',
}


class UnsupportedSchema(ValueError):
    """A schema this grammar cannot hold to: the request gets a 400 naming the keyword."""


def literal(text: str) -> str:
    """An EBNF string literal for ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _Builder:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.used_base = False
        self._refs: dict[str, str] = {}

    def rule(self, prefix: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9_]", "_", prefix) or "r"
        candidate, n = name, 1
        while candidate in self.rules or candidate in BASE_RULES:
            n += 1
            candidate = f"{name}_{n}"
        self.rules[candidate] = body
        return candidate

    def schema(self, schema: Any, path: str, depth: int) -> str:
        """An expression for the values ``schema`` accepts."""
        if depth > MAX_DEPTH:
            raise UnsupportedSchema(f"{path}: nested more than {MAX_DEPTH} levels deep")
        if schema is True or schema == {}:
            return self.base("value")
        if schema is False:
            raise UnsupportedSchema(f"{path}: the schema false accepts nothing")
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"{path}: a schema must be an object")
        for keyword in REFUSED:
            if keyword in schema:
                raise UnsupportedSchema(f"{path}: '{keyword}' is not supported in a "
                                        "constrained response")
        if "$ref" in schema:
            return self.ref(schema["$ref"], path, depth)
        if "const" in schema:
            return literal(compact(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise UnsupportedSchema(f"{path}: 'enum' must be a non-empty list")
            return "(" + " | ".join(literal(compact(v)) for v in values) + ")"
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise UnsupportedSchema(f"{path}: '{keyword}' must be a non-empty list")
                return "(" + " | ".join(self.schema(option, f"{path}/{keyword}/{i}", depth + 1)
                                        for i, option in enumerate(options)) + ")"
        kind = schema.get("type")
        if kind is None:
            kind = "object" if "properties" in schema else \
                "array" if "items" in schema or "prefixItems" in schema else None
        if kind is None:
            return self.base("value")
        if isinstance(kind, list):
            if not kind:
                raise UnsupportedSchema(f"{path}: 'type' must not be an empty list")
            return "(" + " | ".join(self.typed(k, schema, path, depth) for k in kind) + ")"
        return self.typed(kind, schema, path, depth)

    def typed(self, kind: Any, schema: dict[str, Any], path: str, depth: int) -> str:
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, depth)
        if kind == "string":
            return self.string(schema, path)
        if kind in ("integer", "number", "boolean", "null"):
            return self.base(kind)
        raise UnsupportedSchema(f"{path}: unknown type {kind!r}")

    def base(self, name: str) -> str:
        self.used_base = True
        return name

    def ref(self, ref: Any, path: str, depth: int) -> str:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise UnsupportedSchema(f"{path}: only local references ('#/$defs/...') are "
                                    "supported")
        if ref in self._refs:
            return self._refs[ref]
        target: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise UnsupportedSchema(f"{path}: the reference {ref!r} points nowhere")
            target = target[part]
        name = self.rule("ref_" + ref[2:].split("/")[-1], "")
        self._refs[ref] = name  # before the body, so a recursive schema refers to the rule
        self.rules[name] = self.schema(target, ref, depth + 1)
        return name

    def string(self, schema: dict[str, Any], path: str) -> str:
        low, high = _bounds(schema, "minLength", "maxLength", path)
        if low == 0 and high is None:
            return self.base("string")
        self.used_base = True
        return f'"\\"" char{{{low},{high if high is not None else ""}}} "\\""'

    def array(self, schema: dict[str, Any], path: str, depth: int) -> str:
        prefix = schema.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise UnsupportedSchema(f"{path}: 'prefixItems' must be a list")
        items = schema.get("items", True)
        low, high = _bounds(schema, "minItems", "maxItems", path)
        fixed = [self.schema(p, f"{path}/prefixItems/{i}", depth + 1)
                 for i, p in enumerate(prefix)]
        if fixed:
            if items is not False or low > len(fixed) or (high is not None
                                                          and high < len(fixed)):
                raise UnsupportedSchema(f"{path}: 'prefixItems' is supported only as a whole "
                                        "tuple ('items': false)")
            return '"[" ' + ' "," '.join(fixed) + ' "]"'
        item = self.schema(items, f"{path}/items", depth + 1)
        item = self.rule(f"{_last(path)}_item", item) if " " in item else item
        if high == 0:
            return '"[]"'
        if low == 0:
            more = "*" if high is None else f"{{0,{high - 1}}}"
            return f'"[" ({item} ("," {item}){more})? "]"'
        rest_high = "" if high is None else str(high - 1)
        return f'"[" {item} ("," {item}){{{low - 1},{rest_high}}} "]"'

    def object(self, schema: dict[str, Any], path: str, depth: int) -> str:
        properties = schema.get("properties")
        if properties is None:
            if schema.get("additionalProperties", True) is False:
                return '"{}"'
            extra = schema.get("additionalProperties", True)
            if extra is True or extra == {}:
                return self.base("object")
            value = self.schema(extra, f"{path}/additionalProperties", depth + 1)
            self.used_base = True
            return f'"{{" (string ":" {value} ("," string ":" {value})*)? "}}"'
        if not isinstance(properties, dict):
            raise UnsupportedSchema(f"{path}: 'properties' must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or any(r not in properties for r in required):
            missing = [r for r in required if r not in properties] if isinstance(
                required, list) else required
            raise UnsupportedSchema(f"{path}: 'required' names {missing!r}, which "
                                    "'properties' does not define")
        members = [(name, name in required,
                    literal(compact(name) + ":") + " " +
                    self.schema(sub, f"{path}/properties/{name}", depth + 1))
                   for name, sub in properties.items()]
        if not members:
            return '"{}"'
        # After[i]: members i.. when one was written before (a comma first); First[i]: none yet.
        stem = self.rule(f"{_last(path)}_obj", "")
        after = [f"{stem}_a{i}" for i in range(len(members) + 1)]
        first = [f"{stem}_f{i}" for i in range(len(members) + 1)]
        del self.rules[stem]
        self.rules[after[-1]] = '""'
        self.rules[first[-1]] = '""'
        for i in range(len(members) - 1, -1, -1):
            _, needed, member = members[i]
            if needed:
                self.rules[after[i]] = f'"," {member} {after[i + 1]}'
                self.rules[first[i]] = f"{member} {after[i + 1]}"
            else:
                self.rules[after[i]] = f'("," {member})? {after[i + 1]}'
                self.rules[first[i]] = f"{member} {after[i + 1]} | {first[i + 1]}"
        return f'"{{" {first[0]} "}}"'


def _last(path: str) -> str:
    """The last step of a schema path, to name a rule after ("root" for the whole)."""
    return path.rsplit("/", 1)[-1].lstrip("#") or "root"


def _bounds(schema: dict[str, Any], low_key: str, high_key: str, path: str
            ) -> tuple[int, int | None]:
    low, high = schema.get(low_key, 0), schema.get(high_key)
    if not isinstance(low, int) or low < 0 or (high is not None and (
            not isinstance(high, int) or high < low)):
        raise UnsupportedSchema(f"{path}: '{low_key}'/'{high_key}' must be counts, "
                                f"{low_key} <= {high_key}")
    if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
        raise UnsupportedSchema(f"{path}: '{low_key}'/'{high_key}' above {MAX_REPEAT}")
    return low, high


def schema_grammar(schema: Any) -> str:
    """EBNF whose ``root`` is exactly the compact JSON texts ``schema`` accepts (within the
    limits in the module docstring)."""
    return union_grammar([schema], [schema if isinstance(schema, dict) else {}])


def union_grammar(schemas: list[Any], roots: list[dict[str, Any]] | None = None,
                  text_alternative: bool = False) -> str:
    """EBNF for any of ``schemas`` (``roots[i]`` resolves the references of schema i); with
    ``text_alternative`` also free text that does not start with ``{`` (a reply in words)."""
    alternatives = []
    rules: dict[str, str] = {}
    used_base = False
    for index, schema in enumerate(schemas):
        builder = _Builder(roots[index] if roots is not None else {})
        builder.rules = rules
        alternatives.append(builder.schema(schema, "#", 0))
        used_base = used_base or builder.used_base
    if text_alternative:
        alternatives.append('[^{\\x00] [^\\x00]*')
    lines = [f"root ::= {' | '.join(alternatives)}"]
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    if used_base:
        lines += [f"{name} ::= {body}" for name, body in BASE_RULES.items()]
    return "\n".join(lines) + "\n"
