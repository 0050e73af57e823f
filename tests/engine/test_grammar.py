"""The JSON Schema to grammar translation: what it refuses, and the shape of what it writes
(that the model's output then matches the schema is tests/gateway/test_tool_calls.py)."""

from __future__ import annotations

import pytest

from appliance.engine.grammar import UnsupportedSchema, literal, schema_grammar, union_grammar


def test_a_literal_escapes_quotes_backslashes_and_newlines() -> None:
    assert literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_properties_are_written_in_the_schemas_order_with_no_whitespace() -> None:
    grammar = schema_grammar({"type": "object", "properties": {
        "b": {"type": "integer"}, "a": {"type": "boolean"}}, "required": ["b", "a"]})
    first = next(line for line in grammar.splitlines() if '"\\"b\\":"' in line)
    assert "integer" in first and " ws" not in grammar


def test_an_optional_property_can_be_left_out() -> None:
    grammar = schema_grammar({"type": "object", "properties": {"x": {"type": "string"}}})
    assert "| root_obj_f1" in next(line for line in grammar.splitlines()
                                   if line.startswith("root_obj_f0 ::="))


def test_enum_values_become_their_compact_json_literals() -> None:
    grammar = schema_grammar({"enum": ["a b", 1, None]})
    assert grammar.startswith('root ::= ("\\"a b\\"" | "1" | "null")')


def test_string_lengths_become_a_bounded_repeat() -> None:
    assert "char{2,5}" in schema_grammar({"type": "string", "minLength": 2, "maxLength": 5})


def test_array_bounds_become_a_bounded_repeat() -> None:
    grammar = schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 3})
    assert '("," integer){0,2}' in grammar


def test_a_local_reference_is_followed_and_may_recurse() -> None:
    grammar = schema_grammar({"$defs": {"node": {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/node"}}}}, "$ref": "#/$defs/node"})
    assert grammar.count("ref_node ::=") == 1 and "ref_node" in grammar.splitlines()[0]


def test_free_text_is_an_alternative_only_when_asked() -> None:
    call = {"type": "object", "properties": {"name": {"const": "f"}}, "required": ["name"]}
    assert "[^{" in union_grammar([call], text_alternative=True).splitlines()[0]
    assert "[^{" not in union_grammar([call]).splitlines()[0]


@pytest.mark.parametrize("schema", [
    {"allOf": [{"type": "object"}]},
    {"not": {"type": "string"}},
    {"$ref": "https://example.com/s.json"},
    {"$ref": "#/$defs/missing"},
    {"type": "object", "properties": {"a": {}}, "required": ["b"]},
    {"type": "string", "minLength": 5, "maxLength": 2},
    {"type": "tuple"},
    False,
], ids=["allOf", "not", "remote-ref", "dangling-ref", "required-undefined", "bad-lengths",
        "unknown-type", "false"])
def test_what_cannot_be_held_to_is_refused(schema: object) -> None:
    with pytest.raises(UnsupportedSchema):
        schema_grammar(schema)


def test_nesting_past_the_limit_is_refused() -> None:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(30):
        schema = {"type": "array", "items": schema}
    with pytest.raises(UnsupportedSchema, match="nested"):
        schema_grammar(schema)
