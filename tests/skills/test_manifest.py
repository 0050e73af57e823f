"""Plugin manifests (appliance-plugin.toml): the box's own skills load from one, and a
manifest with a mistake is refused with the field named."""

from __future__ import annotations

import pytest

from appliance.skills.manifest import ManifestError, load_manifest, parse_manifest
from appliance.skills.router import BUILTIN, chat_examples

GOOD = """
[plugin]
name = "fx"
version = "1.2.0"
[capabilities]
network = ["rates.example.com:443"]
model_tokens = 200
[[skills]]
name = "fx-rate"
description = "Today's exchange rate"
[skills.parameters]
type = "object"
properties.pair = { type = "string" }
[skills.examples]
en = ["What is the euro rate?", "USD rate today"]
zh = ["今天美元汇率多少？"]
"""


def test_the_builtin_skills_are_declared_in_both_languages() -> None:
    manifest = load_manifest(BUILTIN)
    assert {s.name for s in manifest.skills} == {"hours", "faq", "calc", "handoff", "kb"}
    assert all(s.examples.en and s.examples.zh for s in manifest.skills)
    assert len(chat_examples()) >= 30


def test_a_manifest_grants_only_what_it_declares() -> None:
    manifest = parse_manifest(GOOD, "fx/appliance-plugin.toml")
    capabilities = manifest.capabilities
    assert capabilities.network == ("rates.example.com:443",)
    assert (capabilities.files, capabilities.secrets, capabilities.message) == (False, (), False)


@pytest.mark.parametrize(("change", "named"), [
    (("zh = [\"今天美元汇率多少？\"]", "zh = []"), "skills.0.examples"),
    (("type = \"object\"", "type = \"array\""), "skills.0.parameters"),
    (("version = \"1.2.0\"", "version = \"latest\""), "plugin.version"),
    (("model_tokens = 200", "model_tokens = 200\nshell = true"), "capabilities.shell"),
    (("name = \"fx-rate\"", "name = \"FX Rate!\""), "skills.0.name"),
])
def test_a_manifest_with_a_mistake_is_refused_naming_the_field(change: tuple[str, str],
                                                               named: str) -> None:
    with pytest.raises(ManifestError, match=named.replace(".", r"\.")):
        parse_manifest(GOOD.replace(*change), "fx/appliance-plugin.toml")
