"""A plugin's manifest (``appliance-plugin.toml``): the skills it offers and what it may do.

The box's own skills are declared in the same format (``appliance/skills/builtin``), so the
intent router learns every skill from one kind of file. A capability that is not declared is
not granted; the examples are what the router is trained on, in both languages the branches
use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.skills.toml_files import parse_toml

MANIFEST_NAME = "appliance-plugin.toml"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class ManifestError(Exception):
    """A manifest that cannot be used, phrased for the plugin's author."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Examples(_Strict):
    en: tuple[str, ...] = ()
    zh: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.en + self.zh


class SkillSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=500)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object",
                                                                "properties": {}})
    examples: Examples

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError("must be a JSON Schema of type 'object'")
        return value

    @field_validator("examples")
    @classmethod
    def _enough(cls, value: Examples) -> Examples:
        if len(value.all) < 3:
            raise ValueError("give at least 3 example requests (examples.en, examples.zh): "
                             "the intent router learns the skill from them")
        return value


class Capabilities(_Strict):
    network: tuple[str, ...] = Field((), description="Hosts (host or host:port) it may reach.")
    files: bool = Field(False, description="Read and write files in its own data folder.")
    secrets: tuple[str, ...] = Field((), description="Named secrets it may read.")
    model_tokens: int = Field(0, ge=0, le=8192, description="Model tokens one call may spend.")
    message: bool = Field(False, description="Send messages to the conversation.")
    knowledge: bool = Field(False, description="Search the branch's knowledge base.")

    def beyond(self, granted: Capabilities) -> list[str]:
        """What this asks for that ``granted`` does not give, one phrase each (empty: no
        more than was approved)."""
        more = [f"network host {host}" for host in self.network if host not in granted.network]
        more += [f"secret {name}" for name in self.secrets if name not in granted.secrets]
        if self.model_tokens > granted.model_tokens:
            more.append(f"model tokens {granted.model_tokens} -> {self.model_tokens}")
        more += [what for what, asked, given in (
            ("files in its data folder", self.files, granted.files),
            ("messages to the conversation", self.message, granted.message),
            ("the knowledge base", self.knowledge, granted.knowledge)) if asked and not given]
        return more

    def described(self) -> list[str]:
        """Every capability asked for, one phrase each, as shown for approval."""
        return self.beyond(Capabilities()) or ["nothing beyond answering its skills"]


class About(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?$")
    description: str = Field("", max_length=500)
    entry: str = Field("plugin.py", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py$",
                       description="The plugin's program, relative to its folder.")

    @field_validator("entry")
    @classmethod
    def _inside(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("must stay inside the plugin's folder")
        return value


class PluginManifest(_Strict):
    plugin: About
    capabilities: Capabilities = Field(default_factory=Capabilities)
    skills: tuple[SkillSpec, ...] = Field(min_length=1)

    @field_validator("skills")
    @classmethod
    def _unique(cls, value: tuple[SkillSpec, ...]) -> tuple[SkillSpec, ...]:
        names = [s.name for s in value]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"skill names must be unique: {', '.join(doubled)}")
        return value


def parse_manifest(text: str, where: str) -> PluginManifest:
    return parse_toml(PluginManifest, text, where, ManifestError)


def load_manifest(folder: Path) -> PluginManifest:
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{folder}: no {MANIFEST_NAME}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    return parse_manifest(text, str(path))
